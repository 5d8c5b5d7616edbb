"""``import zoo`` defines things and changes nothing else in the process.

Each check runs in a fresh interpreter with no ``ZOO_*``, ``MALLOC_*`` or
``JAX_*`` variables. Reading ``jax._src`` here is the one place it is allowed:
the test checks that zoo leaves JAX's internals alone.
"""

import json

from tests.helpers import run_probe

_PROBE = r"""
import json, os, pathlib, resource, sys

import jax
from jax._src import compilation_cache

def snapshot():
    return {name: repr(value) for name, value in sorted(jax.config.values.items())}

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

home = pathlib.Path(os.environ["HOME"])
config, hook = snapshot(), compilation_cache.get_file_cache
import zoo  # the import under test
import zoo.runtime, zoo.train, zoo.data, zoo.models
changed = sorted(k for k, v in snapshot().items() if config[k] != v)
import numpy as np
before = rss_mib()
big = np.ones(305 * 2**20 // 8)
del big
after = rss_mib()
print(json.dumps({
    "changed": changed,
    "same_hook": compilation_cache.get_file_cache is hook,
    "home": sorted(str(p.relative_to(home)) for p in home.rglob("*")),
    "rss_growth_mib": after - before,
}))
"""


def _unset(name: str) -> bool:
    return name.startswith(("ZOO_", "MALLOC_", "JAX_", "XLA_", "GLIBC_TUNABLES"))


def test_import_zoo_changes_no_config_no_hook_no_allocator_and_writes_nothing(
    tmp_path,
):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    found = run_probe(_PROBE, env, unset=_unset)
    assert found["changed"] == [], json.dumps(found)
    assert found["same_hook"] is True
    assert found["home"] == []
    # A freed 305 MiB array goes back to the system (glibc's defaults).
    assert found["rss_growth_mib"] < 20, found


def test_only_explicit_calls_change_the_process(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    script = r"""
import json, jax, zoo.runtime
before = jax.config.jax_compilation_cache_dir
folder = zoo.runtime.enable_compilation_cache()
print(json.dumps({"before": before, "folder": str(folder),
                  "now": jax.config.jax_compilation_cache_dir,
                  "again": zoo.runtime.enable_compilation_cache()}))
"""
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    found = run_probe(script, env, unset=_unset)
    assert found["before"] is None
    assert found["folder"].startswith(str(home / ".cache" / "zoo" / "xla"))
    assert found["now"] == found["folder"]
    assert found["again"] is None  # configured already: left as it is
