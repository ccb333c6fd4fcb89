import gc
import weakref

from services.common.heap import freeze_startup_heap


class Node:
    pass


def test_what_is_alive_is_frozen_and_garbage_collected_first():
    survivor = Node()
    cycle = Node()
    cycle.self = cycle
    garbage = weakref.ref(cycle)
    del cycle
    try:
        freeze_startup_heap()
        assert garbage() is None, "a cycle left at start-up was frozen instead of collected"
        assert gc.get_freeze_count() > 0
        assert all(o is not survivor for o in gc.get_objects()), "a start-up object is still scanned by collections"
    finally:
        gc.unfreeze()
    assert any(o is survivor for o in gc.get_objects())
