"""Built-in data shipped with the package (authored questions; see scripts/make_questions.py)."""
