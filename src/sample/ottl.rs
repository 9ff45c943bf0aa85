//! OTTL conditions, the language of the Collector's `ottl_condition` policy: a parser with
//! column-exact errors ([`parse`]), a compiler to a typed tree ([`compile`]), and evaluation
//! on a span read where it lies ([`eval`]) with OTTL's value rules ([`value`]).
//!
//! The semantics follow the Collector's `pkg/ottl` (the `ottlspan` and `ottlspanevent`
//! contexts): comparisons never fail (values of different kinds are "not equal", nil equals
//! only nil, ints and doubles compare as doubles); arithmetic, converters on the wrong kind,
//! and indexes out of range are evaluation errors, handled by the policy's `error_mode`.

pub mod compile;
pub mod eval;
pub mod parse;
pub mod value;

pub use compile::{compile_condition, Cond, Context};
pub use eval::Cx;
pub use parse::{column, parse_condition, Expr};
pub use value::{EvalError, Val};
