#!/usr/bin/env python3
"""An nmid-faas exec function in Python: the call's params arrive on stdin as JSON, the
result goes to stdout, a non-zero exit with a message on stderr is the caller's error."""
import json
import os
import sys

params = json.load(sys.stdin)
name = params.get("name") if isinstance(params, dict) else None
if not isinstance(name, str) or not name:
    print("Greet wants params {\"name\": <string>}", file=sys.stderr)
    sys.exit(3)
json.dump({"greeting": f"Hello, {name}!", "job": os.environ.get("NMID_JOB_ID")}, sys.stdout)
