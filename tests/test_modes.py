"""Unit and property tests for condor_plugins.steering.modes (classad2 only, no daemons)."""

import itertools

import classad2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from condor_plugins.steering import modes
from condor_plugins.steering.modes import CloudMode, merge_requirements


# ----------------------------------------------------------------- helpers

def machines():
    """Machine ads covering IsCloudNode True / False / undefined and the
    attributes the generated expressions use."""
    out = []
    for cloud, mem, arch, opsys in itertools.product(
            (True, False, None), (512, 4096), ("X86_64", "aarch64"), ("LINUX", "x && y")):
        ad = classad2.ClassAd()
        if cloud is not None:
            ad["IsCloudNode"] = cloud
        ad["Memory"] = mem
        ad["Arch"] = arch
        ad["OpSys"] = opsys
        out.append(ad)
    return out


MACHINES = machines()


def job(requirements):
    ad = classad2.ClassAd()
    if requirements is not None:
        ad["Requirements"] = classad2.ExprTree(requirements)
    return ad


def matches(machine, requirements):
    """True iff the Requirements evaluate to true with machine as TARGET."""
    return machine.matches(job(requirements))


def clause_true(machine, mode):
    clause = modes.clause_for(mode)
    return True if clause is None else matches(machine, clause)


# ------------------------------------------------------------------- modes

@pytest.mark.parametrize("text,mode", [
    ("cloud", CloudMode.CLOUD), ("LOCAL", CloudMode.LOCAL), (" any ", CloudMode.ANY),
    ('"cloud"', CloudMode.CLOUD), (CloudMode.LOCAL, CloudMode.LOCAL),
])
def test_parse_mode(text, mode):
    assert modes.parse_mode(text) is mode


@pytest.mark.parametrize("bad", ["", None, "clouds", "true", "cloud local"])
def test_parse_mode_error_names_source(bad):
    with pytest.raises(modes.ModeError) as e:
        modes.parse_mode(bad, source="CLOUD_PLUGINS_DEFAULT_MODE")
    msg = str(e.value)
    assert "CLOUD_PLUGINS_DEFAULT_MODE" in msg and "cloud, local, any" in msg
    assert "\n" not in msg


def test_mode_is_str_enum():
    assert CloudMode.CLOUD == "cloud" and str(CloudMode.ANY) == "any"
    assert [m.value for m in CloudMode] == ["cloud", "local", "any"]


def test_constants():
    assert modes.ATTR_CLOUD_MODE == "CloudMode"
    assert modes.ATTR_CLOUD_MODE_APPLIED == "CloudModeApplied"
    assert modes.KNOB_DEFAULT_MODE == "CLOUD_PLUGINS_DEFAULT_MODE"
    assert modes.clause_for("cloud") == "TARGET.IsCloudNode =?= True"
    assert modes.clause_for("local") == "TARGET.IsCloudNode =!= True"
    assert modes.clause_for("any") is None


def test_clause_semantics():
    for m in MACHINES:
        is_cloud = "IsCloudNode" in m and m["IsCloudNode"] is True
        assert clause_true(m, "cloud") == is_cloud
        assert clause_true(m, "local") == (not is_cloud)
        assert clause_true(m, "any")


# ----------------------------------------------------------------- merging

def test_merge_empty():
    for orig in (None, "", "   "):
        assert merge_requirements(orig, "cloud") == "TARGET.IsCloudNode =?= True"
        assert merge_requirements(orig, "local") == "TARGET.IsCloudNode =!= True"


def test_merge_any_is_identity():
    for orig in (None, "", "a || b", 'Arch == "x && y"'):
        assert merge_requirements(orig, "any") == orig


@pytest.mark.parametrize("orig", [
    "a || b",
    'Arch == "X86_64" || OpSys == "a && b"',
    "!a || b",
    "a ? b : c",
    "a ?: b",
    "Memory > 1024 || IsCloudNode",
    "true",
    "x =?= undefined",
    "a // trailing comment",
    "a\n|| b",
    "{1, 2}[0] == 1 || [x = 1].x == 1",
])
def test_merge_precedence(orig):
    merged = merge_requirements(orig, "cloud")
    assert merged.endswith("&& (TARGET.IsCloudNode =?= True)")
    assert modes.conjuncts(merged)[-1] == modes.normalize("TARGET.IsCloudNode =?= True")
    assert len(modes.conjuncts(merged)) == 2
    # the original survives as one parenthesised unit
    assert modes.conjuncts(merged)[0] == modes.conjuncts(f"({orig}\n)")[0]


@pytest.mark.parametrize("bad", [
    "a &&", "a ] junk", "a; b = c", "a ]; [ b = 1", "(a", "a)", '"unterminated',
    "Memory > $(X)", "a = b", "/* open comment",
])
def test_unparsable_raises(bad):
    with pytest.raises(modes.RequirementsError) as e:
        merge_requirements(bad, "cloud")
    msg = str(e.value)
    assert "\n" not in msg
    assert bad.split()[0] in msg


def test_idempotent_examples():
    for mode in ("cloud", "local"):
        once = merge_requirements("a || b", mode)
        assert merge_requirements(once, mode) == once
    # an existing conjunct, written differently, is recognised structurally
    assert merge_requirements("x && (target.iscloudnode =?= TRUE)", "cloud") == \
        "x && (target.iscloudnode =?= TRUE)"
    assert merge_requirements("(TARGET.IsCloudNode is true) && y", "cloud") == \
        "(TARGET.IsCloudNode is true) && y"
    # but not inside an || or a ternary, and not inside a string
    assert merge_requirements("x || TARGET.IsCloudNode =?= True", "cloud") != \
        "x || TARGET.IsCloudNode =?= True"
    assert merge_requirements('Arch == "&& TARGET.IsCloudNode =?= True"', "cloud") != \
        'Arch == "&& TARGET.IsCloudNode =?= True"'
    assert merge_requirements("c ? TARGET.IsCloudNode =?= True : false", "cloud") != \
        "c ? TARGET.IsCloudNode =?= True : false"


def test_conjuncts():
    assert modes.conjuncts('a && (b || c) && !d && "x&&y" == e') == \
        ["a", "b || c", "!d", '"x&&y" == e']
    assert modes.conjuncts("a || b && c") == ["a || b && c"]
    assert modes.conjuncts("a && b ? c : d") == ["a && b ? c : d"]


# ---------------------------------------------------- property-based tests

ATOMS = st.sampled_from([
    "Memory > 1024", "Memory <= 512", "TARGET.Memory >= 100",
    'Arch == "X86_64"', 'TARGET.Arch != "aarch64"', 'OpSys == "LINUX"',
    'OpSys == "x && y"', '"a || b" == OpSys', '"&& ! ?" != Arch',
    "IsCloudNode", "TARGET.IsCloudNode", "IsCloudNode =?= True", "IsCloudNode =!= False",
    "TARGET.IsCloudNode =?= True", "TARGET.IsCloudNode =!= True", "IsCloudNode == true",
    "true", "false", "undefined", "NoSuchAttr", "Memory",
])


def _compose(children):
    binop = st.sampled_from(["&&", "||", "==", "!=", "=?=", "=!=", "<", ">="])
    return st.one_of(
        st.tuples(children, binop, children).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(children, binop, children).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
        children.map(lambda c: f"!{c}"),
        children.map(lambda c: f"!({c})"),
        st.tuples(children, children, children).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
        st.tuples(children, children).map(lambda t: f"{t[0]} ?: {t[1]}"),
    )


EXPRS = st.recursive(ATOMS, _compose, max_leaves=8)
MODES = st.sampled_from(list(CloudMode))

PROPS = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(orig=EXPRS, mode=MODES)
def test_property_merge_equals_and(orig, mode):
    merged = merge_requirements(orig, mode)
    for m in MACHINES:
        assert matches(m, merged) == (matches(m, orig) and clause_true(m, mode)), (orig, merged)


@PROPS
@given(orig=EXPRS, mode=MODES)
def test_property_idempotent(orig, mode):
    once = merge_requirements(orig, mode)
    assert merge_requirements(once, mode) == once
    if mode is not CloudMode.ANY:
        assert modes.has_clause(once, mode)


@PROPS
@given(orig=EXPRS, mode=st.sampled_from([CloudMode.CLOUD, CloudMode.LOCAL]))
def test_property_result_is_one_expression(orig, mode):
    merged = merge_requirements(orig, mode)
    # valid, and its top level is an && whose last conjunct is the clause
    # (unless the clause was already a top-level conjunct of orig)
    modes.parse_expr(merged)
    if merged != orig:
        assert modes.conjuncts(merged)[-1] == modes.normalize(modes.clause_for(mode))
