"""The installed names: a wheel holds ringlog.broker, ringlog.client and ringlog.storage and no
top-level `broker`, `client` or `storage` package (which a user's client.py would shadow)."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_installs_everything_under_ringlog(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    [wheel] = (tmp_path / "dist").glob("ringlog-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"ringlog", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for package in ("broker", "client", "storage"):
        assert f"ringlog/{package}/__init__.py" in names
    assert "ringlog/broker/handlers/produce.py" in names and "ringlog/client/wire/bounds.py" in names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # A user's project with its own client.py, run from its directory: both import.
    project = tmp_path / "project"
    project.mkdir()
    (project / "client.py").write_text("MINE = True\n")
    check = (
        "import client, ringlog.client, ringlog.broker.server, ringlog.storage.log\n"
        "assert client.MINE\n"
        f"assert ringlog.storage.log.__file__.startswith({str(target)!r}), ringlog.storage.log.__file__\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('broker') is None and importlib.util.find_spec('storage') is None\n"
    )
    # -I: no user site, no PYTHONPATH; the wheel's directory first, then this environment's
    # dependencies (trio, kio, ...), never the repository
    deps = [p for p in sys.path if p.endswith("site-packages")]
    code = f"import sys; sys.path[:0] = [{str(target)!r}, {str(project)!r}]; sys.path += {deps!r}\n" + check
    result = subprocess.run([sys.executable, "-I", "-c", code], cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
