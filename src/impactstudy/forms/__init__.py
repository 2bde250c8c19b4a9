"""Forms: XLSForm questionnaires (read with pyxform), one expression evaluator, validation.

The one public entry of the stage is `load_form`; the evaluator (`parse`) and
`validate_submission` serve the fieldwork server, the simulator and the quality stage alike.
"""

from impactstudy.forms.expr import Expression, ExpressionError, NodeSet, parse
from impactstudy.forms.load import FormError, load_form
from impactstudy.forms.model import Choice, ChoiceList, Field, Form
from impactstudy.forms.validate import FormScope, fill_calculations, validate_submission

__all__ = [
    "Choice",
    "ChoiceList",
    "Expression",
    "ExpressionError",
    "Field",
    "Form",
    "FormError",
    "FormScope",
    "NodeSet",
    "fill_calculations",
    "load_form",
    "parse",
    "validate_submission",
]
