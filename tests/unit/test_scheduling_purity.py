"""scheduling/ imports the standard library only: proven by importing it with heavy packages blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ["celery", "kombu", "torch", "vllm", "sqlalchemy", "fastapi", "numpy", "pydantic", "transformers"]

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    BLOCKED = set({blocked!r})

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError("blocked: " + name)
            return None

    sys.meta_path.insert(0, Block())
    for name in BLOCKED:
        sys.modules.pop(name, None)
    import elis.scheduling as package
    names = [m.name for m in pkgutil.iter_modules(package.__path__, "elis.scheduling.")]
    for name in names:
        importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print(len(names))
    """
)


def test_the_scheduling_package_imports_with_heavy_packages_blocked():
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(blocked=BLOCKED)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) >= 4  # policy, levels, queue, balance


def test_the_blocker_really_blocks():
    script = SCRIPT.format(blocked=BLOCKED) + "\nimport numpy\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode != 0 and "blocked: numpy" in done.stderr
