import sys
from pathlib import Path

# Make tests/envs/batch_checks.py importable from the env tests.
sys.path.insert(0, str(Path(__file__).parent))
