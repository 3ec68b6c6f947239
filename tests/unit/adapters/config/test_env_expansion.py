"""`${VAR}` expansion: shell semantics, string values only, every problem with its key path."""

from __future__ import annotations

import pytest

from adapters.config.env_expansion import (
    ExpansionError,
    ExpansionProblem,
    expand_string,
    expand_values,
)


def expansion_error(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ExpansionError) as caught:
        expand_string(text, environ or {})
    return str(caught.value)


class TestExpandString:
    def test_text_without_references_is_unchanged(self) -> None:
        assert expand_string("plain $HOME $ $$ {} text", {}) == "plain $HOME $ $$ {} text"

    def test_set_variable_is_substituted(self) -> None:
        assert expand_string("${A}", {"A": "x"}) == "x"

    def test_several_references_and_surrounding_text(self) -> None:
        env = {"USER": "bob", "HOST": "db"}
        assert expand_string("pg://${USER}@${HOST}:5432", env) == "pg://bob@db:5432"

    def test_set_but_empty_variable_without_default_is_empty(self) -> None:
        assert expand_string("[${A}]", {"A": ""}) == "[]"

    def test_unset_variable_is_an_error_with_the_fix(self) -> None:
        assert expansion_error("${DBWARD_AGENT_TOKEN}") == (
            "undefined environment variable ${DBWARD_AGENT_TOKEN}; "
            "set it or write ${DBWARD_AGENT_TOKEN:-default}"
        )

    def test_default_used_when_unset(self) -> None:
        assert expand_string("${A:-fallback}", {}) == "fallback"

    def test_default_used_when_empty_like_the_shell(self) -> None:
        assert expand_string("${A:-fallback}", {"A": ""}) == "fallback"

    def test_value_wins_over_default_when_set(self) -> None:
        assert expand_string("${A:-fallback}", {"A": "real"}) == "real"

    def test_empty_default(self) -> None:
        assert expand_string("x${A:-}y", {}) == "xy"

    def test_default_may_hold_url_punctuation(self) -> None:
        default = "postgres://u:p@127.0.0.1:5432/app?sslmode=disable&x=:-"
        assert expand_string("${DATABASE_URL:-" + default + "}", {}) == default

    def test_escape_gives_a_literal_and_is_not_expanded(self) -> None:
        assert expand_string("$${HOME}", {"HOME": "/root"}) == "${HOME}"

    def test_escape_next_to_a_reference(self) -> None:
        assert expand_string("$${A}${A}", {"A": "x"}) == "${A}x"

    def test_values_are_inserted_raw_and_not_rescanned(self) -> None:
        assert expand_string("${A}", {"A": '${B} "quoted" \\'}) == '${B} "quoted" \\'

    def test_unclosed_reference(self) -> None:
        assert expansion_error("abc${X") == (
            "unclosed ${ at character 4: add the closing } (or write $${ for a literal ${)"
        )

    def test_empty_reference(self) -> None:
        assert expansion_error("${}") == "empty ${}: write ${NAME} or ${NAME:-default}"

    @pytest.mark.parametrize("body", ["1X", "-A", ":-x", "9"])
    def test_bad_variable_name(self, body: str) -> None:
        assert expansion_error("${" + body + "}") == (
            f"malformed ${{{body}}}: not a valid variable name "
            "(use letters, digits and _, not starting with a digit)"
        )

    @pytest.mark.parametrize("text", ["${A-x}", "${A:x}", "${A:=x}", "${A x}"])
    def test_other_shell_forms_are_refused(self, text: str) -> None:
        assert "only ${A} and ${A:-default} are supported" in expansion_error(text, {"A": "1"})

    def test_nested_reference_in_default(self) -> None:
        assert expansion_error("${A:-${B}}") == (
            "nested ${ in the default of ${A:-...} is not supported"
        )

    def test_nested_is_refused_even_when_the_outer_variable_is_set(self) -> None:
        assert "nested" in expansion_error("${A:-${B}}", {"A": "x", "B": "y"})


class TestExpandValues:
    def test_walks_tables_and_arrays_and_keeps_other_types(self) -> None:
        document = {
            "a": "${A}",
            "n": 5,
            "flag": True,
            "t": {"list": ["${A}", 1, {"deep": "x${A:-d}"}]},
        }
        assert expand_values(document, {"A": "v"}) == {
            "a": "v",
            "n": 5,
            "flag": True,
            "t": {"list": ["v", 1, {"deep": "xv"}]},
        }

    def test_keys_are_never_expanded(self) -> None:
        assert expand_values({"${A}": "${A}"}, {"A": "v"}) == {"${A}": "v"}

    def test_input_is_not_modified(self) -> None:
        document = {"a": ["${A}"]}
        expand_values(document, {"A": "v"})
        assert document == {"a": ["${A}"]}

    def test_every_problem_is_reported_with_its_path(self) -> None:
        document = {"a": "${A}", "t": {"list": ["ok", "${B:-${C}}"]}, "u": "${"}
        with pytest.raises(ExpansionError) as caught:
            expand_values(document, {})
        assert caught.value.problems == (
            ExpansionProblem(
                ("a",), "undefined environment variable ${A}; set it or write ${A:-default}"
            ),
            ExpansionProblem(
                ("t", "list", 1), "nested ${ in the default of ${B:-...} is not supported"
            ),
            ExpansionProblem(
                ("u",),
                "unclosed ${ at character 1: add the closing } (or write $${ for a literal ${)",
            ),
        )
