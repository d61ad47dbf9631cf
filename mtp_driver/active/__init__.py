"""Active learning: MaxVol active set, extrapolation grades and D-optimal selection (Podryabinkin & Shapeev 2017)."""

from .active_set import ActiveSet, build_active_set
from .grade import configuration_grades
from .select import select_add
from .storage import load_active_set, save_active_set

__all__ = ["ActiveSet", "build_active_set", "configuration_grades", "select_add", "load_active_set",
           "save_active_set"]
