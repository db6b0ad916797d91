"""scripts/: the setup never touches the machine's services, and the scripts say only true things."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL_SCRIPTS = [ROOT / "scripts" / name for name in ("_env.sh", "test", "demo", "bench")]


def test_the_shell_scripts_parse():
    for script in SHELL_SCRIPTS:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


def test_setup_never_stops_disables_or_reconfigures_a_service():
    for script in SHELL_SCRIPTS:
        code = "\n".join(line.split("#", 1)[0] for line in script.read_text().splitlines())
        for word in ("systemctl", "invoke-rc.d", "update-rc.d", "service ", "pkill", "killall"):
            assert word not in code, f"{script.name} uses {word.strip()}"


def test_services_are_held_back_only_by_a_policy_the_setup_made_and_removes():
    env = (ROOT / "scripts" / "_env.sh").read_text()
    assert re.search(r'if \[ ! -e "\$policy" \]', env), "an existing policy-rc.d must be left alone"
    assert 'rm -f "$policy"' in env


def test_bench_names_only_benchmarks_that_exist(tmp_path):
    # The dispatcher alone, beside a stand-in for _env.sh (no virtualenv work in a test).
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "bench").write_bytes((ROOT / "scripts" / "bench").read_bytes())
    (scripts / "bench").chmod(0o755)
    (scripts / "_env.sh").write_text(f'ROOT="{tmp_path}"; PY=true; emu_python_ready() {{ :; }}\n')
    for bench in (ROOT / "scripts").glob("bench_*.py"):
        (scripts / bench.name).symlink_to(bench)
    done = subprocess.run([str(scripts / "bench"), "no-such-benchmark"], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    named = done.stderr.split("(have:", 1)[1].strip(" )\n").split()
    assert named and all((ROOT / "scripts" / f"bench_{name}.py").is_file() for name in named)
