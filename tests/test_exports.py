"""The public API: `__all__` is complete and sorted; the error tree is as drawn."""

from __future__ import annotations

import sessionstore
from sessionstore import exceptions


def test_all_is_sorted_and_complete() -> None:
    """Every public name defined in the package is exported, and nothing else."""
    # `annotations` is the __future__ import, not an export.
    public = {n for n in dir(sessionstore) if not n.startswith("_")} - {"annotations"}
    modules = {name for name in public if type(getattr(sessionstore, name)).__name__ == "module"}
    assert sorted(sessionstore.__all__) == sessionstore.__all__
    assert set(sessionstore.__all__) == public - modules


def test_every_error_is_a_session_store_error_and_named_in_the_docstring() -> None:
    for name in exceptions.__all__:
        error = getattr(exceptions, name)
        assert issubclass(error, exceptions.SessionStoreError)
        assert name in (exceptions.__doc__ or ""), f"{name} missing from the drawn tree"


def test_input_errors_are_value_errors() -> None:
    """Callers that catch ValueError for bad input keep working."""
    assert issubclass(exceptions.InvalidSessionId, ValueError)
    assert issubclass(exceptions.PayloadTooLarge, ValueError)


def test_errors_survive_pickling() -> None:
    """Errors cross process boundaries (multiprocessing, arq job results) intact."""
    import pickle

    error = exceptions.VersionConflict("0.abc", expected=3, actual=5)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is exceptions.VersionConflict
    assert (copy.session_id, copy.expected, copy.actual) == ("0.abc", 3, 5)
    assert str(copy) == str(error)
    gone = pickle.loads(pickle.dumps(exceptions.SessionExpired("0.x", "0.y")))
    assert gone.superseded_by == "0.y"


def test_store_and_fleet_export_what_they_define() -> None:
    """`sessionstore.store` and `sessionstore.fleet` list every public name, sorted."""
    from sessionstore import fleet, store

    for package in (store, fleet):
        public = {n for n in dir(package) if not n.startswith("_")} - {"annotations"}
        modules = {n for n in public if type(getattr(package, n)).__name__ == "module"}
        assert sorted(package.__all__) == package.__all__
        assert set(package.__all__) == public - modules


def test_the_root_re_exports_the_store_core() -> None:
    """The package root hands out the same objects as `sessionstore.store`."""
    from sessionstore import store

    for name in ("SessionStore", "SessionLock", "TrackedLease", "sweep_store", "repair_store"):
        assert getattr(sessionstore, name) is getattr(store, name)


def test_testing_helpers_live_apart_from_the_package_root() -> None:
    """The dev and test helpers are exported by `sessionstore.testing` (complete, sorted
    `__all__`) and no longer from the package root."""
    import sessionstore.testing as testing

    public = {n for n in dir(testing) if not n.startswith("_")} - {"annotations"}
    modules = {name for name in public if type(getattr(testing, name)).__name__ == "module"}
    assert sorted(testing.__all__) == testing.__all__
    assert set(testing.__all__) == public - modules
    for name in ("LocalRedis", "LocalCluster", "LocalSentinel", "find_server_binary"):
        assert name in testing.__all__
        assert name not in sessionstore.__all__
        assert not hasattr(sessionstore, name)


def test_the_library_and_the_server_load_no_dev_code() -> None:
    """Importing the package, the server, the middleware and the upstreams loads neither the
    testing helpers nor the dev commands (nor the demo routes)."""
    import subprocess
    import sys

    probe = (
        "import sys, sessionstore, sessionstore.server, sessionstore.asgi, sessionstore.upstream;"
        "print(sorted(m for m in sys.modules"
        " if m.startswith(('sessionstore.testing', 'sessionstore.cli.dev'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout
