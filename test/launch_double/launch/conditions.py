"""TEST DOUBLE of `launch.conditions` (see test/launch_double/README.md): IfCondition, UnlessCondition."""

from __future__ import annotations

from typing import Any

from launch import perform

# launch/conditions/evaluate_condition_expression_impl.py (jazzy): the accepted spellings, case-insensitive.
_TRUE = ("true", "1")
_FALSE = ("false", "0")


def evaluate_condition_expression(value: str) -> bool:
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid condition expression {value!r}: expected one of {_TRUE + _FALSE}")


class IfCondition:
    """Test double: true when the expression evaluates to true."""

    def __init__(self, predicate_expression: Any) -> None:
        self.predicate_expression = predicate_expression

    def evaluate(self, context: dict[str, Any]) -> bool:
        return evaluate_condition_expression(perform(self.predicate_expression, context))


class UnlessCondition(IfCondition):
    """Test double: true when the expression evaluates to false."""

    def evaluate(self, context: dict[str, Any]) -> bool:
        return not super().evaluate(context)
