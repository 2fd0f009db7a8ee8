import os
import sys

# core_speed.py and the servers live beside the benchmark files
sys.path.insert(0, os.path.dirname(__file__))
