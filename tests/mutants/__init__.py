"""The mutation suite's material: wrong implementations that must lose points, correct ones that must not.

Each assignment's mutants.toml (grader/assignments/NN_name/) lists its mutants as patches of its solution notebook
(`patches.py` reads and applies them); `styles*.py` hold correct implementations in other styles; `harness.py` grades them all with
`grader batch`. tests/test_mutants.py and tests/test_styles.py read the results.
"""
