from openspark.core.memo import memoised


def test_a_value_is_built_once_none_included_and_the_store_stays_bounded():
    store: dict = {}
    built = []

    def build(value):
        built.append(value)
        return value

    assert memoised(store, "a", lambda: build(None)) is None
    assert memoised(store, "a", lambda: build("again")) is None  # None is remembered
    assert built == [None]
    for n in range(5):
        memoised(store, n, lambda n=n: n, limit=3)
    assert len(store) <= 3 and store[4] == 4
