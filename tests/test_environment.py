"""The repository's promises about itself: pins agree, README commands, CI entry point."""
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = re.split(r"==", line)
            out[name.lower().replace("_", "-")] = version
    return out


def test_environment_yml_and_requirements_agree():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(pip) == req
    assert req["torch"] == "2.14.1" and req["torchvision"] == "0.29.1"
    assert req["jupyter-book"].startswith("1.")
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S)
    return [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.split("#")[0].strip()]


def test_readme_opens_with_book_and_test_commands():
    commands = _readme_commands()
    assert commands[:2] == ["make book", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^book: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def test_the_package_declares_what_it_imports_and_the_pins_meet_its_bounds():
    """pyproject.toml lists every third-party module src/prunedyn imports (core dependencies or an
    extra), and requirements.txt's pins satisfy every lower bound."""
    import ast
    import sys
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    extras = {k: [Requirement(r) for r in v] for k, v in project["optional-dependencies"].items()}
    names = {r.name.lower() for r in declared} | {r.name.lower() for rs in extras.values() for r in rs}
    dist = {"yaml": "pyyaml", "PIL": "pillow", "torch_pruning": "torch-pruning", "sklearn": "scikit-learn"}
    optional = {"triton"}  # a GPU-only kernel, imported where present
    imported = set()
    for f in (ROOT / "src" / "prunedyn").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third = {m for m in imported if m not in sys.stdlib_module_names and m not in ("prunedyn", "__future__")}
    missing = {dist.get(m, m).lower().replace("_", "-") for m in third - optional} - names
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
    pins = _pins((ROOT / "requirements.txt").read_text().splitlines())
    for r in declared + [r for rs in extras.values() for r in rs]:
        if r.name.lower() in pins:
            assert r.specifier.contains(pins[r.name.lower()], prereleases=True), (str(r), pins[r.name.lower()])


@pytest.mark.slow
def test_a_non_editable_install_runs_outside_the_repository(tmp_path):
    """``pip install .`` (a built wheel, not the checkout) used from a folder outside any checkout:
    ``prunedyn run`` finds its data through ``$PRUNEDYN_DATA``, and without it says so in one line."""
    import subprocess
    import sys

    target, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PRUNEDYN_DATA", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    cmd = [sys.executable, "-m", "prunedyn.cli", "run", "mlp-mnist", "--set", "epochs=1",
           "--set", "data.train_size=500", "--set", "data.test_size=500", "--quiet"]
    where = subprocess.run([sys.executable, "-c", "import prunedyn; print(prunedyn.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target)), where  # the installed copy, not the checkout
    missing = subprocess.run(cmd + ["--out", "a"], cwd=work, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "PRUNEDYN_DATA" in missing.stderr, missing.stderr
    assert not (work / "a").exists()
    env["PRUNEDYN_DATA"] = str(ROOT / "data")
    ok = subprocess.run(cmd + ["--out", "b"], cwd=work, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (work / "b" / "summary.json").exists()
