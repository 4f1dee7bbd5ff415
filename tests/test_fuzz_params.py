"""params.yaml validation never raises anything but a one-line BenchError, whatever the input."""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.config import validate
from bench.errors import BenchError

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)


def paths(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield prefix + (key,)
            yield from paths(value, prefix + (key,))


def check(params):
    try:
        validate(params)
    except BenchError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), replacement=values)
def test_replacing_any_value_gives_a_clean_error_or_passes(real_params, data, replacement):
    params = copy.deepcopy(real_params)
    path = data.draw(st.sampled_from(list(paths(params))))
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = replacement
    check(params)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), key=st.text(max_size=6), value=values)
def test_adding_any_key_gives_a_clean_error_or_passes(real_params, data, key, value):
    params = copy.deepcopy(real_params)
    parent = data.draw(st.sampled_from([()] + [p for p in paths(params) if isinstance(_get(params, p), dict)]))
    _get(params, parent)[key] = value
    check(params)


@settings(max_examples=100, deadline=None)
@given(values)
def test_any_document_gives_a_clean_error_or_passes(document):
    check(document)


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree
