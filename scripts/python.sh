# Sourced by the experiment scripts: picks the project's .venv Python when it exists, else $PYTHON or python.
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
