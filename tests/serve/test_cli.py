"""`engine serve`'s refusals, before anything listens."""

import pytest

from ..test_cli import _one_line_error, _run


@pytest.mark.parametrize("args, needle", [
    (["--host", "0.0.0.0"], "give --token"),
    (["--host", "192.168.1.20"], "give --token"),
    (["--device", "gpu"], "give cpu or a GPU index"),
    (["--content", "no/such/folder"], "not a folder of photos"),
])
def test_serve_refuses_what_it_cannot_do_safely(args, needle):
    _one_line_error(_run("serve", *args), needle)
