import sys
from pathlib import Path

# Make tests/compat/tfds_steps.py importable as `tfds_steps` from every compat test.
sys.path.insert(0, str(Path(__file__).parent))
