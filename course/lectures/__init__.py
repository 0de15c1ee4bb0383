"""The lecture notebooks' library (`lectures/`), one module a job:

- `loading`: the checkpoint, the assignment solutions and WikiText, or a plain message saying what is missing;
- `style`: how figures look on a projector;
- `sampling` (lecture 01), `kv_cache` (02), `gltr` (03 and 05), `inside` (03): each lecture's figures and the
  sentences that say what they show, computed from the numbers;
- `widgets`: the interactive panels;
- `decks`: executing a notebook and exporting it as a reveal.js deck;
- `cli`: `python -m course.lectures`, what `make slides` and `make figures` run.
"""
