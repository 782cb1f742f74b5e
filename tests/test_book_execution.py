"""prunedyn.run.book: a chapter whose cell runs over the time limit is executed once more."""
import nbformat
import pytest

from prunedyn.run.book import execute_notebook


def notebook(path, source):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_a_cell_over_the_limit_is_retried_once_with_a_fresh_kernel(tmp_path):
    from nbclient.exceptions import CellTimeoutError

    # the first attempt hangs (sleeps past the limit), the second finds the marker and finishes
    nb = tmp_path / "chapter.ipynb"
    notebook(nb, "import pathlib, time\nfirst = not pathlib.Path('tried').exists()\npathlib.Path('tried').touch()\n"
                 "time.sleep(30 if first else 0)\nprint('attempt', 1 if first else 2)")
    execute_notebook(nb, {}, timeout=4, retries=1)
    out = nbformat.read(nb, as_version=4).cells[-1].outputs
    assert (tmp_path / "tried").exists() and "attempt 2" in out[0]["text"]

    # always over the limit: the last attempt's timeout is raised
    (tmp_path / "tried").unlink()
    notebook(nb, "import time\ntime.sleep(30)")
    with pytest.raises(CellTimeoutError):
        execute_notebook(nb, {}, timeout=3, retries=1)
