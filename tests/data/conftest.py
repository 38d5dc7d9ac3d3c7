import sys
from pathlib import Path

# Make tests/data/strategies.py importable as `strategies` from every data test.
sys.path.insert(0, str(Path(__file__).parent))
