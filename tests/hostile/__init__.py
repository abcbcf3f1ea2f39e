"""The hostile-input corpus of issue 12: make.py writes hostile files, case.py runs and judges one
case, corpus.py generates every case from compact tables (see benchmarks/hostile.py)."""
