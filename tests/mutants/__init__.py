"""Wrong implementations of the graded functions of 02_sampling and 03_penalties (the mutation suite).

Each `<assignment>/<name>.py` holds one plausible mistake: its docstring says what is wrong, its code
redefines one or more graded functions. `harness.py` turns each into a student notebook (the solution
notebook plus one cell with the mutant's code, which overrides the solution's definition) and grades
them all in one `grader batch` run per assignment. A `# symptom: REGEX` line says what the feedback of at
least one of its failed tests must say (tests/test_mutants_sampling.py checks it).
"""
