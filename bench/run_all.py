#!/usr/bin/env python3
"""Run every benchmark under bench/ and print their results."""
import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
rc = 0
for script in sorted(here.glob("*.py")):
    if script.name == "run_all.py":
        continue
    print(f"== {script.name}", flush=True)
    rc |= subprocess.run([sys.executable, str(script)]).returncode
sys.exit(rc)
