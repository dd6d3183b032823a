//! kinesync's `plus`, `minus`, `times`, `divided_by`, `modulo` and `abs`, in place of liquid's.
//!
//! The same results as liquid's (integers stay integers; a float on either side makes a
//! float), except at the edges of the 64-bit integers: liquid's wrap (`9223372036854775807 |
//! plus: 1` gives a negative number) or panic (`divided_by: -1` and `modulo: -1` on the
//! smallest integer). Here an integer result that does not fit is the row's error, naming the
//! filter and its operands, as a division by zero is.
//!
//! Where it sits: registered in `language.rs`, evaluated per use per row while rendering.

use liquid_core::parser::{FilterArguments, ParameterReflection};
use liquid_core::{
    Error, Expression, Filter, FilterReflection, ParseFilter, Result, Runtime, Value, ValueView,
};

/// Which operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Plus,
    Minus,
    Times,
    DividedBy,
    Modulo,
    Abs,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Plus,
        Op::Minus,
        Op::Times,
        Op::DividedBy,
        Op::Modulo,
        Op::Abs,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Plus => "plus",
            Op::Minus => "minus",
            Op::Times => "times",
            Op::DividedBy => "divided_by",
            Op::Modulo => "modulo",
            Op::Abs => "abs",
        }
    }

    fn takes_operand(self) -> bool {
        self != Op::Abs
    }

    fn integer(self, a: i64, b: i64) -> Option<i64> {
        match self {
            Op::Plus => a.checked_add(b),
            Op::Minus => a.checked_sub(b),
            Op::Times => a.checked_mul(b),
            Op::DividedBy => a.checked_div(b),
            Op::Modulo => a.checked_rem(b),
            Op::Abs => a.checked_abs(),
        }
    }

    fn float(self, a: f64, b: f64) -> f64 {
        match self {
            Op::Plus => a + b,
            Op::Minus => a - b,
            Op::Times => a * b,
            Op::DividedBy => a / b,
            Op::Modulo => a % b,
            Op::Abs => a.abs(),
        }
    }
}

/// The six filters, for `language.rs` to register.
pub(super) fn all() -> impl Iterator<Item = ArithmeticParser> {
    Op::ALL.into_iter().map(ArithmeticParser)
}

/// Parses one of the six.
#[derive(Debug, Clone, Copy)]
pub(super) struct ArithmeticParser(Op);

const OPERAND: [ParameterReflection; 1] = [ParameterReflection {
    name: "operand",
    description: "The number to combine the input with.",
    is_optional: false,
}];

impl FilterReflection for ArithmeticParser {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn description(&self) -> &str {
        "Arithmetic on numbers; an integer result beyond 64 bits is an error, not a wrap."
    }
    fn positional_parameters(&self) -> &'static [ParameterReflection] {
        if self.0.takes_operand() {
            &OPERAND
        } else {
            &[]
        }
    }
    fn keyword_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }
}

impl ParseFilter for ArithmeticParser {
    fn parse(&self, mut arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
        let op = self.0;
        let operand = arguments.positional.next();
        let extra = arguments.positional.next().is_some() || arguments.keyword.next().is_some();
        if extra || operand.is_some() != op.takes_operand() {
            return Err(Error::with_msg(if op.takes_operand() {
                format!("the {} filter takes one number", op.name())
            } else {
                format!("the {} filter takes no arguments", op.name())
            }));
        }
        Ok(Box::new(Arithmetic { op, operand }))
    }
    fn reflection(&self) -> &dyn FilterReflection {
        self
    }
}

#[derive(Debug)]
struct Arithmetic {
    op: Op,
    operand: Option<Expression>,
}

impl std::fmt::Display for Arithmetic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.op.name())
    }
}

impl Filter for Arithmetic {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let op = self.op;
        let name = op.name();
        let number_expected =
            |what: &str| Error::with_msg(format!("the {name} filter needs a number as its {what}"));
        let input = input.as_scalar().ok_or_else(|| number_expected("input"))?;
        let operand = match &self.operand {
            Some(expression) => {
                let value = expression.evaluate(runtime)?;
                Some(
                    value
                        .as_scalar()
                        .map(|s| s.into_owned())
                        .ok_or_else(|| number_expected("operand"))?,
                )
            }
            None => None,
        };
        if matches!(op, Op::DividedBy | Op::Modulo) {
            let zero = operand.as_ref().is_some_and(|o| {
                o.to_integer() == Some(0) || (o.to_integer().is_none() && o.to_float() == Some(0.0))
            });
            if zero {
                return Err(Error::with_msg(format!(
                    "the {name} filter cannot divide by zero"
                )));
            }
        }
        let b = operand.as_ref();
        if let (Some(a), Some(b)) = (input.to_integer(), b.map_or(Some(0), |b| b.to_integer())) {
            return op.integer(a, b).map(Value::scalar).ok_or_else(|| {
                let expression = if op.takes_operand() {
                    format!("{a} | {name}: {b}")
                } else {
                    format!("{a} | {name}")
                };
                Error::with_msg(format!(
                    "{expression} is beyond the 64-bit integers (-9223372036854775808 to 9223372036854775807)"
                ))
            });
        }
        let a = input.to_float().ok_or_else(|| number_expected("input"))?;
        let b = match b {
            Some(b) => b.to_float().ok_or_else(|| number_expected("operand"))?,
            None => 0.0,
        };
        Ok(Value::scalar(op.float(a, b)))
    }
}
