"""fgsn.utils.parallel.Engine: serial and Dask runs yield every item once, with the same results."""
from fgsn.utils.parallel import Engine


def _square_batch(offset, batch):
    return [(x, x * x + offset) for x in batch]


def test_serial_in_order():
    with Engine(workers=1) as engine:
        assert not engine.parallel and engine.num_workers() == 1
        assert list(engine.imap(_square_batch, range(5), 1)) == [(x, x * x + 1) for x in range(5)]
        assert list(engine.imap(_square_batch, [], 1)) == []


def test_local_cluster_same_results():
    with Engine(workers=2) as engine:
        assert engine.parallel and engine.num_workers() == 2
        out = list(engine.imap(_square_batch, range(50), 3, batch_size=4))
    assert sorted(out) == [(x, x * x + 3) for x in range(50)]


def test_consecutive_calls_share_one_engine():
    """Steps run one after another on one engine with equal shared objects (the same dataset and configuration):
    each call's tasks keep their own copy while the previous call's is released."""
    shared = ({"offset": 2}, list(range(100)))
    with Engine(workers=2) as engine:
        for _ in range(4):
            out = list(engine.imap(_offset_batch, range(3), shared, batch_size=1))
            assert sorted(out) == [(x, x + 2) for x in range(3)]


def _offset_batch(shared, batch):
    conf, _ = shared
    return [(x, x + conf["offset"]) for x in batch]
