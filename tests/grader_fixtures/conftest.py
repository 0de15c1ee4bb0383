# The example assignment's tests run under the grader (with its `student` fixture), not in the project's suite.
collect_ignore = ["assignments"]
