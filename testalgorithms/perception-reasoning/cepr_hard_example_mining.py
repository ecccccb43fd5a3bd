"""Ianvs hard-example-mining filters: cepr's dispatch policies under Sedna's names and parameters
(EdgeOnly, CloudOnly, Random/RandomRouter, Oracle/OracleRouter, CrossEntropy, Threshold).

Thin adapter: the logic is ``cepr.dispatch``. Where Sedna is installed these replace its same-named filters,
which crash on zero probabilities, a single class or numpy input.
"""

from cepr.dispatch import POLICIES

from cepr.compat import ClassType
from cepr.compat.class_factory import force_register

for _name, _cls in POLICIES.items():
    force_register(_cls, ClassType.HEM, _name)
