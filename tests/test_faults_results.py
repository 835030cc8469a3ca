"""Fault catalogue: result files (descriptions CSVs) with values no method writes.

Each case asserts the exact outcome: refused with a message that names the line and the
value, or read with the bad value kept out of every statistic.
"""
from __future__ import annotations

import math

import pytest

from dissect_core.common.errors import InvalidInputError
from dissect_core.runs.analysis import layer_summary
from dissect_core.runs.formats import MAX_UNIT, read_descriptions

HEADER = b"layer,unit,description,similarity\n"


@pytest.mark.parametrize("score", [b"inf", b"-inf", b"1e999", b"-1e999", b"Infinity"])
def test_an_infinite_score_is_refused_with_its_line(score):
    data = HEADER + b"layer4,0,dog,0.25\nlayer4,1,cat," + score + b"\n"
    with pytest.raises(InvalidInputError, match=f"line 3: similarity '{score.decode()}' is infinite"):
        read_descriptions(data)


def test_a_written_nan_is_no_score_and_stays_out_of_the_statistics():
    # NaN is how a method says "no score" (MILAN has none; the reference's cos_similarity
    # gives an all-zero unit NaN), so it is read, and the layer's figures skip it.
    frame = read_descriptions(HEADER + b"layer4,0,dog,0.25\nlayer4,1,cat,nan\nlayer4,2,sky,0.75\n")
    assert math.isnan(frame["similarity"].iloc[1])
    summary = layer_summary(frame).iloc[0]
    assert (summary["mean_similarity"], summary["min_similarity"], summary["max_similarity"]) == (0.5, 0.25, 0.75)


@pytest.mark.parametrize("description", [b" ", b"   ", b"\t", b'"  "'])
def test_a_description_of_only_spaces_is_an_empty_label(description):
    with pytest.raises(InvalidInputError, match="line 3: the description is empty"):
        read_descriptions(HEADER + b"layer4,0,dog,0.25\nlayer4,1," + description + b",0.5\n")


def test_a_netdissect_label_of_only_spaces_is_an_empty_label():
    data = b"unit,category,label,score\n1,object,dog,0.1\n2,object,  ,0.2\n"
    with pytest.raises(InvalidInputError, match="line 3: the label is empty"):
        read_descriptions(data, name="resnet18_layer4.csv")


@pytest.mark.parametrize("unit, shown", [(b"1e30", "1,000,000,000,000,000,019,884,624,838,656"),
                                         (b"9223372036854775808", "9,223,372,036,854,775,808")])
def test_a_huge_unit_number_is_refused_with_its_true_value(unit, shown):
    with pytest.raises(InvalidInputError) as error:
        read_descriptions(HEADER + b"layer4,0,dog,0.25\nlayer4," + unit + b",cat,0.5\n")
    message = str(error.value)
    assert f"line 3: unit '{unit.decode()}' ({shown}) is larger than any layer has" in message
    assert f"{MAX_UNIT:,}" in message and "-9,223" not in message


def test_the_largest_unit_number_is_read_exactly():
    frame = read_descriptions(HEADER + f"layer4,{MAX_UNIT},dog,0.25\n".encode())
    assert frame["unit"].tolist() == [MAX_UNIT]


def test_a_trailing_comma_on_every_row_is_blamed_on_the_extra_field():
    data = b"layer,unit,description,similarity\nlayer4,0,dog,0.25,\nlayer4,1,cat,0.5,\n"
    with pytest.raises(InvalidInputError) as error:
        read_descriptions(data, name="descriptions.csv")
    message = str(error.value)
    assert message.startswith("descriptions.csv, line 2: 5 fields, but the header names 4 columns")
    assert "comma at the end of each row" in message and "'dog'" not in message


def test_a_trailing_comma_on_some_rows_names_the_first_such_line():
    data = b"layer,unit,description,similarity\nlayer4,0,dog,0.25\nlayer4,1,cat,0.5,\n"
    with pytest.raises(InvalidInputError, match="Expected 4 fields in line 3, saw 5"):
        read_descriptions(data)
