"""Decide on a pip-audit JSON report (``pip-audit --format json``) for scripts/audit.sh.

    python audit_report.py REPORT LOCK IF_REACHABLE(true|false)

Exit 1 when any package has a known vulnerability with a fix version (listed on stderr); a
vulnerability without a fix is a warning. A package pip-audit could not look up (``skip_reason``)
means the lock was not fully audited: exit 1, or with IF_REACHABLE=true a WARNING and exit 0.
Report format: ``{"dependencies": [{"name", "version", "vulns": [{"id", "fix_versions",
"aliases", ...}]} | {"name", "skip_reason"}], "fixes": [...]}`` (pip-audit 2.x).
"""

from __future__ import annotations

import json
import sys


def main(report_path: str, lock: str, if_reachable: bool) -> int:
    report = json.load(open(report_path))
    deps = report["dependencies"]
    skipped = [f"{d['name']}=={d.get('version', '?')} ({d['skip_reason']})" for d in deps if d.get("skip_reason")]
    fixable, unfixed = [], []
    for dep in deps:
        for vuln in dep.get("vulns", []):
            line = f"{dep['name']}=={dep['version']}: {vuln['id']} {' '.join(vuln.get('aliases', []))}".strip()
            if vuln.get("fix_versions"):
                fixable.append(f"{line} (fixed in {', '.join(vuln['fix_versions'])})")
            else:
                unfixed.append(line)
    for line in unfixed:
        print(f"[audit.sh] warning, no fix released: {line}", file=sys.stderr)
    if fixable:
        print(f"[audit.sh] {lock}: {len(fixable)} known vulnerabilities with a fix:", file=sys.stderr)
        for line in fixable:
            print(f"  {line}", file=sys.stderr)
        return 1
    if skipped:
        where = "WARNING: not audited" if if_reachable else "cannot be audited"
        print(f"[audit.sh] {where}: {', '.join(skipped)}", file=sys.stderr)
        return 0 if if_reachable else 1
    print(f"[audit.sh] {lock}: {len(deps)} packages, no known vulnerability with a fix", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3] == "true"))
