# Makes notebooks/ a package so that its conftest.py is imported as notebooks.conftest and does not shadow
# tests/conftest.py (the tests do `from conftest import ...`) when pytest collects tests/ and notebooks/ together.
