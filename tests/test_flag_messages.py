"""Every list or tuple flag value is read by fairseq_guided/flags.py, and a malformed one is
refused with a ValueError that names the flag, says what it wants and quotes what it got:
the number pairs (parse_float_tuple: --adam-betas, --lamb-betas, --adafactor-eps), a
malformed --guided-meta-betas pair (parse_unit_pair, each beta in [0, 1)), --guided-hparams
(parse_name_list), --guided-steepness (parse_name_values) and --guided-groups (parse_groups);
both when parsed alone and when fairseq builds a guided optimizer from them."""
import math
import re
from types import SimpleNamespace

import pytest
import torch

from fairseq_guided.flags import (parse_float_tuple, parse_groups, parse_name_list, parse_name_values,
                                  parse_unit_pair)
from fairseq_guided.param_groups import GroupSpec, assign_groups

FLAG = "--guided-meta-betas"
MALFORMED = ["0.9", "(0.9)", "(0.9, 0.98, 0.999)", "(0.9, x)", "", "()", "(0.9, 1.0)", "(-0.1, 0.9)"]


def message(text):
    return f"{FLAG}: expected two numbers in [0, 1) like '(0.9, 0.999)'; got {text!r}"


@pytest.mark.parametrize("text", MALFORMED)
def test_a_malformed_meta_betas_pair_is_refused_naming_the_flag(text):
    """A malformed or out-of-range --guided-meta-betas pair raises a ValueError naming the flag."""
    with pytest.raises(ValueError) as caught:
        parse_unit_pair(text, FLAG)
    assert str(caught.value) == message(text)


def test_a_well_formed_meta_betas_pair_is_read_in_its_order():
    """A well-formed --guided-meta-betas pair is read with or without brackets, in its order."""
    assert parse_unit_pair("(0.5, 0.99)", FLAG) == (0.5, 0.99)
    assert parse_unit_pair("0.0,0.9", FLAG) == (0.0, 0.9)
    assert parse_unit_pair("[0.9, 0.5]", FLAG) == (0.9, 0.5)


@pytest.mark.parametrize("text", ["(0.9)", "(0.9, x)"])
def test_fairseq_building_a_guided_optimizer_refuses_the_pair_naming_the_flag(text):
    """fairseq building a guided optimizer refuses a malformed --guided-meta-betas with the same message."""
    from fairseq.optim import build_optimizer
    from omegaconf import OmegaConf

    import fairseq_guided  # noqa: F401 (registers the guided optimizers)

    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError) as caught:
        build_optimizer(OmegaConf.create({"_name": "guided_adam", "lr": [0.01], "guided_hparams": "alpha",
                                          "guided_meta_betas": text}), params)
    assert str(caught.value) == message(text)


# --- [0, 1) for each meta beta: both ends, just inside and just outside -------------------

BELOW_ZERO = math.nextafter(0.0, -1.0)  # the largest float < 0
BELOW_ONE = math.nextafter(1.0, 0.0)  # the largest float < 1


@pytest.mark.parametrize("pair", [(0.0, 0.0), (0.0, BELOW_ONE), (BELOW_ONE, 0.0), (5e-324, 0.5)])
def test_meta_betas_at_the_ends_of_zero_to_one_are_accepted(pair):
    """0 and the largest float below 1 are inside [0, 1) for either --guided-meta-betas beta."""
    assert parse_unit_pair(f"({pair[0]!r}, {pair[1]!r})", FLAG) == pair


@pytest.mark.parametrize("pair", [(1.0, 0.5), (0.5, 1.0), (BELOW_ZERO, 0.5), (0.5, BELOW_ZERO), (1.5, 0.5),
                                  (0.5, 1.5), (float("nan"), 0.5), (0.5, float("inf"))])
def test_meta_betas_outside_zero_to_one_are_refused(pair):
    """1, the largest float below 0, 1.5, nan and inf are outside [0, 1) for either --guided-meta-betas beta."""
    text = f"({pair[0]!r}, {pair[1]!r})"
    with pytest.raises(ValueError) as caught:
        parse_unit_pair(text, FLAG)
    assert str(caught.value) == message(text)


# --- parse_float_tuple: --adam-betas, --lamb-betas, --adafactor-eps -----------------------

def tuple_message(flag, length, text):
    return f"{flag}: expected {length} comma-separated numbers; got {text!r}"


@pytest.mark.parametrize("text,length,expected", [
    ("(0.9, 0.98)", 2, (0.9, 0.98)), ("[1e-30, 1e-3]", 2, (1e-30, 1e-3)), ("0.5,0.25", 2, (0.5, 0.25)),
    (" ( -1 , 2.5 ) ", 2, (-1.0, 2.5)), ("(1, 2, 3)", 3, (1.0, 2.0, 3.0)), ("7", 1, (7.0,)),
    ((0.9, 0.98), 2, (0.9, 0.98)), ([0.25, 0.5], 2, (0.25, 0.5)),
])
def test_a_number_tuple_is_read_in_its_order_with_or_without_brackets(text, length, expected):
    """A number tuple (string, or a tuple/list from a config) is read in its order, brackets optional."""
    assert parse_float_tuple(text, "--adam-betas", length) == expected


@pytest.mark.parametrize("text,length", [
    ("(0.9)", 2), ("(0.9, 0.98, 0.999)", 2), ("(0.9, x)", 2), ("(x, y)", 2), ("", 2), ("()", 2),
    ("(0.9,)", 2), ("X(0.9, 0.98)", 2), ("(0.9, 0.98)X", 2), ("(0.9; 0.98)", 2), ("1, 2", 3),
])
def test_a_malformed_number_tuple_is_refused_naming_the_flag_and_length(text, length):
    """A wrong count, a non-number or stray characters raise a ValueError naming the flag, the count and the value."""
    with pytest.raises(ValueError) as caught:
        parse_float_tuple(text, "--lamb-betas", length)
    assert str(caught.value) == tuple_message("--lamb-betas", length, text)


def test_fairseq_building_guided_adafactor_refuses_a_malformed_eps_naming_its_flag():
    """fairseq building guided_adafactor refuses a one-number --adafactor-eps naming that flag."""
    from fairseq.optim import build_optimizer
    from omegaconf import OmegaConf

    import fairseq_guided  # noqa: F401 (registers the guided optimizers)

    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError) as caught:
        build_optimizer(OmegaConf.create({"_name": "guided_adafactor", "lr": [0.01], "adafactor_eps": "(1e-30)"}),
                        params)
    assert str(caught.value) == tuple_message("--adafactor-eps", 2, "(1e-30)")


@pytest.mark.parametrize("eps,shown", [("(0, 1e-3)", "(0.0, 0.001)"), ("(-1, 1e-3)", "(-1.0, 0.001)"),
                                       ("(nan, nan)", "(nan, nan)"), ("(1e-30, -5)", "(1e-30, -5.0)"),
                                       ("(1e-30, inf)", "(1e-30, inf)")])
def test_fairseq_building_guided_adafactor_refuses_epsilons_out_of_range(eps, shown):
    """--adafactor-eps outside eps1 > 0, eps2 >= 0 (finite) is refused when fairseq builds the optimizer."""
    from fairseq.optim import build_optimizer
    from omegaconf import OmegaConf

    import fairseq_guided  # noqa: F401 (registers the guided optimizers)

    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError) as caught:
        build_optimizer(OmegaConf.create({"_name": "guided_adafactor", "lr": [0.01], "adafactor_eps": eps}), params)
    assert str(caught.value) == f"--adafactor-eps: eps1 must be > 0 and eps2 >= 0, both finite; got {shown}"
    for fine in ("(5e-324, 0)", "(1e-30, 1e-3)"):
        build_optimizer(OmegaConf.create({"_name": "guided_adafactor", "lr": [0.01], "adafactor_eps": fine}), params)


# --- parse_name_list: --guided-hparams ---------------------------------------------------

ALLOWED = ("alpha", "beta1", "beta2", "eps", "weight_decay")
HFLAG = "--guided-hparams (for guided_adam)"
LEAVE_OUT = "list names like 'alpha,beta1', or leave the flag out to learn nothing"


@pytest.mark.parametrize("text,expected", [
    ("alpha,beta1", ["alpha", "beta1"]), (" beta1 , alpha ", ["beta1", "alpha"]), ("eps", ["eps"]),
    ("alpha,beta1,beta2,eps,weight_decay", list(ALLOWED)), ("", []), (None, []),
])
def test_hparam_names_are_read_in_their_order(text, expected):
    """--guided-hparams names are read stripped and in their order; empty or unset learns nothing."""
    assert parse_name_list(text, ALLOWED, HFLAG) == expected


@pytest.mark.parametrize("text", [" ", "\t", "  \n "])
def test_whitespace_only_hparams_are_refused(text):
    """A whitespace-only --guided-hparams (an unset script variable) is refused, quoting it."""
    with pytest.raises(ValueError) as caught:
        parse_name_list(text, ALLOWED, HFLAG)
    assert str(caught.value) == f"{HFLAG}: {text!r} is only whitespace; {LEAVE_OUT}"


@pytest.mark.parametrize("text", [",", "alpha,,beta1", "alpha,", ", alpha", "alpha, ,beta1"])
def test_an_empty_hparam_name_is_refused(text):
    """An empty name in --guided-hparams is refused as such (README: an empty name is an error)."""
    with pytest.raises(ValueError) as caught:
        parse_name_list(text, ALLOWED, HFLAG)
    assert str(caught.value) == f"{HFLAG}: an empty name in {text!r}; {LEAVE_OUT}"


@pytest.mark.parametrize("text,unknown", [("alpha,gamma", "gamma"), ("beta", "beta"), ("Alpha", "Alpha"),
                                          ("XXXX", "XXXX"), ("alpha beta1", "alpha beta1")])
def test_an_unknown_hparam_name_is_refused_listing_the_allowed_ones(text, unknown):
    """An unknown --guided-hparams name is refused, quoting it and listing the allowed names."""
    with pytest.raises(ValueError) as caught:
        parse_name_list(text, ALLOWED, HFLAG)
    assert str(caught.value) == (f"{HFLAG}: unknown hyper-parameter {unknown!r}; "
                                 f"allowed: alpha, beta1, beta2, eps, weight_decay")


@pytest.mark.parametrize("text", ["alpha,beta1,alpha", "alpha, alpha"])
def test_an_hparam_named_twice_is_refused(text):
    """A --guided-hparams name given twice is refused, quoting the value."""
    with pytest.raises(ValueError) as caught:
        parse_name_list(text, ALLOWED, HFLAG)
    assert str(caught.value) == f"{HFLAG}: a hyper-parameter is named twice in {text!r}"


# --- parse_name_values: --guided-steepness -----------------------------------------------

SFLAG = "--guided-steepness"


@pytest.mark.parametrize("text,expected", [
    ("alpha=2,beta1=0.5", {"alpha": 2.0, "beta1": 0.5}), (" alpha = 2 , beta1=1e-3 ", {"alpha": 2.0, "beta1": 1e-3}),
    ("beta1=-1", {"beta1": -1.0}), ("", {}), (None, {}),
])
def test_steepness_values_are_read_per_name(text, expected):
    """--guided-steepness NAME=S,NAME=S is read into one number per name; empty or unset names none."""
    assert parse_name_values(text, ("alpha", "beta1"), SFLAG) == expected


@pytest.mark.parametrize("text,item", [("alpha:2", "alpha:2"), ("alpha", "alpha"), ("gamma=2", "gamma=2"),
                                       ("alpha=2,beta2=1", "beta2=1"), ("=2", "=2"), ("alpha=2,5", "5")])
def test_a_steepness_item_not_name_equals_value_is_refused_listing_the_names(text, item):
    """A --guided-steepness item that is not NAME=VALUE with an allowed NAME is refused, quoting the item."""
    with pytest.raises(ValueError) as caught:
        parse_name_values(text, ("alpha", "beta1"), SFLAG)
    assert str(caught.value) == f"{SFLAG}: expected NAME=VALUE with NAME in alpha, beta1; got {item!r}"


@pytest.mark.parametrize("text,value,item", [("alpha=x", "x", "alpha=x"), ("alpha=", "", "alpha="),
                                             ("beta1=1, alpha=2=3", "2=3", "alpha=2=3")])
def test_a_steepness_that_is_not_a_number_is_refused_quoting_it(text, value, item):
    """A --guided-steepness value that is not a number is refused, quoting the value and its item."""
    with pytest.raises(ValueError) as caught:
        parse_name_values(text, ("alpha", "beta1"), SFLAG)
    assert str(caught.value) == f"{SFLAG}: {value!r} is not a number (in {item!r})"


def learned_from(**flags):
    """build_learned (the check fairseq runs when it builds a guided optimizer) on adam's names."""
    from fairseq_guided.optim.guided_base import build_learned

    cfg = dict(guided_hparams="alpha,beta1", guided_alpha_init=1.0, guided_meta_lr=1e-3,
               guided_meta_betas="(0.9, 0.999)", guided_meta_eps=1e-8, guided_meta_clip=0.0,
               guided_steepness="")
    cfg.update(flags)
    return build_learned(SimpleNamespace(**cfg), ALLOWED, {"beta1": 0.9, "beta2": 0.98, "eps": 1e-8,
                                                           "weight_decay": 0.0}, "guided_adam")


def test_the_learned_values_take_the_meta_betas_and_steepness_as_given():
    """The parsed --guided-meta-betas and --guided-steepness reach the meta-Adam and the values, by name."""
    learned = learned_from(guided_meta_betas="(0.0, 0.5)", guided_steepness="beta1=4")
    assert (learned.meta.beta1, learned.meta.beta2) == (0.0, 0.5)
    assert learned.names == ["alpha", "beta1"]
    assert learned.steepness.tolist() == [1.0, 4.0]


@pytest.mark.parametrize("steepness,expected", [
    ("alpha=0", "--guided-steepness: alpha=0.0 must be > 0"),
    ("alpha=-1", "--guided-steepness: alpha=-1.0 must be > 0"),
    ("alpha=inf", "--guided-steepness: alpha=inf must be > 0"),
    ("beta2=2", "--guided-steepness: beta2 is not learned (--guided-hparams 'alpha,beta1'); drop beta2= "
                "or add beta2 to --guided-hparams"),
    ("gamma=2", "--guided-steepness: expected NAME=VALUE with NAME in alpha, beta1, beta2, eps, weight_decay; "
                "got 'gamma=2'"),
])
def test_building_the_learned_values_refuses_a_steepness_not_positive_or_not_learned(steepness, expected):
    """A --guided-steepness <= 0, infinite, of an unlearned or unknown name is refused when the optimizer is built."""
    with pytest.raises(ValueError) as caught:
        learned_from(guided_steepness=steepness)
    assert str(caught.value) == expected


def test_the_smallest_positive_steepness_is_accepted():
    """--guided-steepness must be > 0: the smallest positive float is accepted."""
    assert learned_from(guided_steepness="alpha=5e-324").steepness.tolist() == [5e-324, 1.0]


# --- parse_groups: --guided-groups -------------------------------------------------------

GFLAG = "--guided-groups"
USAGE = "use global, layer, a list of module prefixes like embed,encoder,decoder, or NAME=REGEX;NAME=REGEX"


@pytest.mark.parametrize("text", ["global", " global "])
def test_global_groups_parse_to_none(text):
    """--guided-groups global (the default) means no groups: None."""
    assert parse_groups(text) is None


@pytest.mark.parametrize("text", [None, "", "   "])
def test_empty_or_unset_groups_are_refused_with_the_usage(text):
    """An empty or unset --guided-groups is refused, naming the flag and its forms."""
    with pytest.raises(ValueError) as caught:
        parse_groups(text)
    assert str(caught.value) == f"{GFLAG}: empty; {USAGE}"


def test_layer_groups_parse_to_the_layer_kind_without_patterns():
    """--guided-groups layer is the layer kind, with no patterns."""
    assert parse_groups("layer") == GroupSpec("layer", "layer", ())
    assert parse_groups(" layer ") == GroupSpec("layer", "layer", ())


def test_prefix_groups_parse_to_the_prefix_kind_matching_from_a_dotted_part():
    """A prefix list is the prefix kind; NAME matches from the start of a dotted part up to '.', '_' or the end."""
    spec = parse_groups(" embed, encoder ,decoder.layers.0 ")
    assert (spec.text, spec.kind) == ("embed, encoder ,decoder.layers.0", "prefix")
    assert [n for n, _ in spec.patterns] == ["embed", "encoder", "decoder.layers.0"]
    embed, encoder, layer0 = (regex for _, regex in spec.patterns)
    assert embed.search("encoder.embed_tokens.weight") and embed.search("embed")
    assert not embed.search("encoder.reembed.weight") and not embed.search("embedding.weight")
    assert encoder.search("encoder.layers.0.fc1.weight") and not encoder.search("decoder.encoder2.weight")
    assert layer0.search("decoder.layers.0.fc1.weight") and not layer0.search("decoder.layers.01.fc1.weight")
    grouping = assign_groups(spec, ["encoder.embed_tokens.weight", "decoder.layers.0.fc1.weight", "x.bias"])
    assert (grouping.groups, grouping.group_of) == (["embed", "encoder", "decoder.layers.0", "other"], [0, 2, 3])


def test_regex_groups_parse_to_the_regex_kind_splitting_at_the_first_equals_sign():
    """NAME=REGEX;NAME=REGEX is the regex kind; each NAME ends at its first '=', the rest is the regex."""
    spec = parse_groups("a = x=y ; b=fc\\d")
    assert (spec.text, spec.kind) == ("a = x=y ; b=fc\\d", "regex")
    assert [(n, regex.pattern) for n, regex in spec.patterns] == [("a", "x=y"), ("b", "fc\\d")]
    grouping = assign_groups(spec, ["w.x=y", "layers.0.fc1.weight", "w.fc"])
    assert (grouping.groups, grouping.group_of) == (["a", "b", "other"], [0, 1, 2])


@pytest.mark.parametrize("text,item", [("a=", "a="), ("a=  ", "a="), ("a=x;b=", "b="), ("a=x;b", "b"),
                                       ("a=x;", ""), ("a=x;;b=y", "")])
def test_a_regex_group_without_a_regex_is_refused_quoting_the_item(text, item):
    """A --guided-groups NAME=REGEX item with no '=' or an empty regex is refused, quoting item and value."""
    with pytest.raises(ValueError) as caught:
        parse_groups(text)
    assert str(caught.value) == (f"{GFLAG}: expected NAME=REGEX items separated by ';'; got {item!r} "
                                 f"in {text.strip()!r}")


def test_a_bad_regular_expression_is_refused_naming_its_group():
    """A --guided-groups regex that does not compile is refused, naming the group, the regex and re's reason."""
    with pytest.raises(re.error) as reason:
        re.compile("[unclosed")
    with pytest.raises(ValueError) as caught:
        parse_groups("a=fc;b = [unclosed")
    assert str(caught.value) == f"{GFLAG}: group 'b': bad regular expression '[unclosed' ({reason.value})"


@pytest.mark.parametrize("text,reserved", [("layer=fc", "layer"), ("embed,layer", "layer"), ("other", "other"),
                                           ("a=x;other=y", "other"), ("global=fc", "global"),
                                           ("encoder,global", "global")])
def test_a_reserved_word_cannot_name_a_group(text, reserved):
    """layer, other and global cannot name a --guided-groups group, in a prefix list or as NAME=REGEX."""
    with pytest.raises(ValueError) as caught:
        parse_groups(text)
    assert str(caught.value) == (f"{GFLAG}: {reserved!r} cannot name a group ('other' collects the "
                                 f"parameters no group takes)")


@pytest.mark.parametrize("text,name", [("enc oder", "enc oder"), ("a b=x", "a b"), ("=x", ""),
                                       (".embed", ".embed"), ("embed,dec/oder", "dec/oder")])
def test_a_group_name_outside_the_log_key_characters_is_refused(text, name):
    """A --guided-groups name must be letters, digits, '_', '.', '-' (not leading '.' or '-'): it becomes a log key."""
    with pytest.raises(ValueError) as caught:
        parse_groups(text)
    assert str(caught.value) == (f"{GFLAG}: group name {name!r} may hold only letters, digits, '_', '.' and '-' "
                                 f"(it becomes a log key); {USAGE}")


@pytest.mark.parametrize("text", ["embed,,decoder", "embed,", ",embed"])
def test_an_empty_prefix_group_name_is_refused(text):
    """An empty name in a --guided-groups prefix list is refused, with the usage."""
    with pytest.raises(ValueError) as caught:
        parse_groups(text)
    assert str(caught.value) == f"{GFLAG}: an empty group name in {text!r}; {USAGE}"


@pytest.mark.parametrize("text", ["encoder,encoder", "a=x;a=y", "embed, embed"])
def test_a_group_named_twice_is_refused(text):
    """A --guided-groups name given twice is refused, quoting the value."""
    with pytest.raises(ValueError) as caught:
        parse_groups(text)
    assert str(caught.value) == f"{GFLAG}: a group is named twice in {text!r}"


@pytest.mark.parametrize("text", ["embed,decoder.layers-0,x_1", "e-1=fc;E.2=x", "0=fc"])
def test_group_names_of_the_allowed_characters_are_accepted(text):
    """Letters, digits, '_', '.' and '-' (after the first character) make a valid --guided-groups name."""
    spec = parse_groups(text)
    expected = [part.split("=")[0] for part in re.split(r"[,;]", text)]
    assert [n for n, _ in spec.patterns] == expected


@pytest.mark.parametrize("text", [" ", "\t"])
def test_whitespace_only_steepness_is_refused(text):
    """A --guided-steepness of only whitespace (a script's unset variable) is refused, as --guided-hparams's is."""
    with pytest.raises(ValueError) as caught:
        parse_name_values(text, ("alpha", "beta1"), SFLAG)
    assert str(caught.value) == (f"{SFLAG}: {text!r} is only whitespace; give NAME=VALUE items like "
                                 f"'alpha=2', or leave the flag out")


@pytest.mark.parametrize("text", ["alpha=2,,", ",alpha=2", "alpha=2, ,beta1=1", ","])
def test_an_empty_steepness_item_is_refused(text):
    """An empty --guided-steepness item is refused instead of dropped."""
    with pytest.raises(ValueError) as caught:
        parse_name_values(text, ("alpha", "beta1"), SFLAG)
    assert str(caught.value) == f"{SFLAG}: an empty item in {text!r}; give NAME=VALUE items like 'alpha=2,beta1=0.5'"


@pytest.mark.parametrize("text,name", [("alpha=2,alpha=3", "alpha"), ("beta1=1, alpha=2,beta1 =1", "beta1")])
def test_a_steepness_given_twice_is_refused(text, name):
    """A name given twice in --guided-steepness is refused instead of the last one winning."""
    with pytest.raises(ValueError) as caught:
        parse_name_values(text, ("alpha", "beta1"), SFLAG)
    assert str(caught.value) == f"{SFLAG}: {name} is given twice in {text!r}"
