//! kinesync's `{% for %}` block, in place of liquid's own.
//!
//! Same syntax and the same `forloop` object (`length`, `index`, `index0`, `rindex`,
//! `rindex0`, `first`, `last`, `parentloop`), `{% else %}` for an empty list, `limit:`,
//! `offset:`, `reversed`, ranges `(a..b)`, objects iterated as `[key, value]` pairs, and
//! `{% break %}` / `{% continue %}`. It differs in what it costs: liquid's block builds a
//! `HashMap` for every iteration and copies every value read from its scope; this one keeps
//! the loop variable and `forloop` in a two-name scope on the stack and lends the values out.
//! It also does not pad: liquid-rust fills `limit:` past the end of a list with nils, Shopify
//! Liquid (and this block) stops at the end.
//!
//! Where it sits: parsed into the compiled payload when a template compiles (registered in
//! `language.rs`), run for each row while it renders, with each iteration's names in a
//! `runtime.rs` frame.

use std::cell::Cell;
use std::fmt;
use std::io::Write;

use liquid_core::model::{KStringCow, ObjectView, Scalar, ValueCow, ValueView};
use liquid_core::parser::{BlockElement, TryMatchToken};
use liquid_core::runtime::{Interrupt, InterruptRegister};
use liquid_core::{
    BlockReflection, Error, Expression, Language, ParseBlock, Renderable, Result, Runtime,
    TagBlock, TagTokenIter, Template,
};

use super::runtime::Frame;
use crate::view::object_value_view;

/// Parses `{% for %}`; registered in `language.rs` under liquid's name for it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ForBlock;

impl BlockReflection for ForBlock {
    fn start_tag(&self) -> &str {
        "for"
    }
    fn end_tag(&self) -> &str {
        "endfor"
    }
    fn description(&self) -> &str {
        "Repeats its body for each item of a list or range."
    }
}

#[derive(Debug)]
enum Source {
    List(Expression),
    Range(Expression, Expression),
}

impl ParseBlock for ForBlock {
    fn parse(
        &self,
        mut arguments: TagTokenIter<'_>,
        mut body_tokens: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let variable = arguments
            .expect_next("a loop variable name")?
            .expect_identifier()
            .into_result()?
            .to_owned();
        arguments
            .expect_next("`in`")?
            .expect_str("in")
            .into_result_custom_msg("expected `in` after the loop variable")?;
        let source = match arguments.expect_next("a list or a range")?.expect_value() {
            TryMatchToken::Matches(list) => Source::List(list),
            TryMatchToken::Fails(token) => match token.expect_range() {
                TryMatchToken::Matches((start, end)) => Source::Range(start, end),
                TryMatchToken::Fails(token) => return Err(token.raise_error()),
            },
        };
        let (mut limit, mut offset, mut reversed) = (None, None, false);
        while let Some(token) = arguments.next() {
            let slot = match token.as_str() {
                "reversed" => {
                    reversed = true;
                    continue;
                }
                "limit" => &mut limit,
                "offset" => &mut offset,
                _ => {
                    return Err(
                        token.raise_custom_error("expected `limit:`, `offset:` or `reversed`")
                    );
                }
            };
            arguments
                .expect_next("`:`")?
                .expect_str(":")
                .into_result_custom_msg("expected `:`")?;
            *slot = Some(
                arguments
                    .expect_next("a number")?
                    .expect_value()
                    .into_result()?,
            );
        }
        arguments.expect_nothing()?;

        let mut body = Vec::new();
        let mut otherwise = None;
        while let Some(element) = body_tokens.next()? {
            match element {
                BlockElement::Tag(mut tag) if tag.name() == "else" => {
                    tag.tokens().expect_nothing()?;
                    otherwise = Some(Template::new(body_tokens.parse_all(options)?));
                    break;
                }
                BlockElement::Tag(tag) => body.push(tag.parse(&mut body_tokens, options)?),
                element => body.push(element.parse(&mut body_tokens, options)?),
            }
        }
        body_tokens.assert_empty();
        Ok(Box::new(For {
            variable,
            source,
            limit,
            offset,
            reversed,
            body: Template::new(body),
            otherwise,
        }))
    }

    fn reflection(&self) -> &dyn BlockReflection {
        self
    }
}

#[derive(Debug)]
struct For {
    variable: String,
    source: Source,
    limit: Option<Expression>,
    offset: Option<Expression>,
    reversed: bool,
    body: Template,
    otherwise: Option<Template>,
}

fn whole_number(expr: &Expression, runtime: &dyn Runtime, what: &str) -> Result<i64> {
    let value = expr.evaluate(runtime)?;
    value
        .as_scalar()
        .and_then(|s| s.to_integer())
        .ok_or_else(|| {
            Error::with_msg(format!(
                "{what} must be a whole number, found {}",
                value.source()
            ))
        })
}

/// The most times the loops of one row may run their bodies, all loops together: a row
/// costs bounded time and memory whatever its values (`{% for i in (1..row.n) %}` with `n`
/// in the hundreds of millions would otherwise be built, then run).
pub const MAX_LOOP_ITERATIONS: u64 = 100_000;

thread_local! {
    /// What is left of the rendering row's [`MAX_LOOP_ITERATIONS`].
    static ITERATIONS_LEFT: Cell<u64> = const { Cell::new(MAX_LOOP_ITERATIONS) };
}

/// A row starts rendering on this thread: its loops get the whole budget.
pub(super) fn reset_loop_budget() {
    ITERATIONS_LEFT.set(MAX_LOOP_ITERATIONS);
}

/// Takes `iterations` from the row's budget, or says it would run out.
fn spend(iterations: u64) -> Result<()> {
    let left = ITERATIONS_LEFT.get();
    if iterations > left {
        return Err(Error::with_msg(format!(
            "the loops of this row would run more than {MAX_LOOP_ITERATIONS} times in all, the most one row may loop"
        )));
    }
    ITERATIONS_LEFT.set(left - iterations);
    Ok(())
}

impl Renderable for For {
    fn render_to(&self, writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        let list = match &self.source {
            Source::List(expr) => Some(expr.evaluate(runtime)?),
            Source::Range(..) => None,
        };
        let mut items: Vec<ValueCow<'_>> = match (&self.source, &list) {
            (Source::Range(start, end), _) => {
                let start = whole_number(start, runtime, "a range's start")?;
                let end = whole_number(end, runtime, "a range's end")?;
                // Counted before it is built: a range is the one source not already in
                // memory.
                let count = (i128::from(end) - i128::from(start) + 1).max(0);
                if count > i128::from(ITERATIONS_LEFT.get()) {
                    return Err(Error::with_msg(format!(
                        "the loops of this row would run more than {MAX_LOOP_ITERATIONS} times in all, the most one row may loop (the range ({start}..{end}) has {count} numbers)"
                    )));
                }
                (start..=end)
                    .map(|i| ValueCow::Owned(liquid_core::Value::scalar(i)))
                    .collect()
            }
            (Source::List(_), Some(list)) => {
                let list = list.as_view();
                if let Some(array) = list.as_array() {
                    array.values().map(ValueCow::Borrowed).collect()
                } else if let Some(object) = list.as_object() {
                    object
                        .iter()
                        .map(|(k, v)| {
                            ValueCow::Owned(liquid_core::Value::Array(vec![
                                liquid_core::Value::scalar(k.into_owned()),
                                v.to_value(),
                            ]))
                        })
                        .collect()
                } else if list.is_nil() || list.is_state() {
                    Vec::new()
                } else {
                    return Err(Error::with_msg(format!(
                        "`for` needs a list, a range or an object, found a {}",
                        list.type_name()
                    )));
                }
            }
            (Source::List(_), None) => unreachable!("a list source is evaluated above"),
        };
        let offset = match &self.offset {
            Some(expr) => whole_number(expr, runtime, "`offset`")?.max(0) as usize,
            None => 0,
        };
        items.drain(..offset.min(items.len()));
        if let Some(expr) = &self.limit {
            items.truncate(whole_number(expr, runtime, "`limit`")?.max(0) as usize);
        }
        if self.reversed {
            items.reverse();
        }
        if items.is_empty() {
            return match &self.otherwise {
                Some(otherwise) => otherwise.render_to(writer, runtime),
                None => Ok(()),
            };
        }

        spend(items.len() as u64)?;
        let parent = runtime.try_get(&[Scalar::new("forloop")]);
        let length = items.len();
        for (index, item) in items.iter().enumerate() {
            let scope = LoopScope {
                variable: &self.variable,
                item: item.as_view(),
                forloop: Forloop::new(index, length, parent.as_ref().map(ValueCow::as_view)),
            };
            let frame = Frame {
                parent: runtime,
                names: &scope,
            };
            self.body.render_to(writer, &frame)?;
            let interrupt = frame.registers().get_mut::<InterruptRegister>().reset();
            if interrupt == Some(Interrupt::Break) {
                break;
            }
        }
        Ok(())
    }
}

/// The names a loop body adds: its variable and `forloop`.
struct LoopScope<'a> {
    variable: &'a str,
    item: &'a dyn ValueView,
    forloop: Forloop<'a>,
}

impl fmt::Debug for LoopScope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopScope")
            .field("variable", &self.variable)
            .finish_non_exhaustive()
    }
}

/// `forloop`: where the loop is.
#[derive(Debug)]
struct Forloop<'a> {
    values: [liquid_core::Value; 7],
    parent: Option<&'a dyn ValueView>,
}

impl<'a> Forloop<'a> {
    const KEYS: [&'static str; 8] = [
        "length",
        "index",
        "index0",
        "rindex",
        "rindex0",
        "first",
        "last",
        "parentloop",
    ];

    fn new(index: usize, length: usize, parent: Option<&'a dyn ValueView>) -> Self {
        let (i, n) = (index as i64, length as i64);
        let (int, boolean) = (
            liquid_core::Value::scalar::<i64>,
            liquid_core::Value::scalar::<bool>,
        );
        Self {
            values: [
                int(n),
                int(i + 1),
                int(i),
                int(n - i),
                int(n - i - 1),
                boolean(i == 0),
                boolean(i == n - 1),
            ],
            parent,
        }
    }

    fn value(&self, key: &str) -> Option<&dyn ValueView> {
        match Self::KEYS.iter().position(|k| *k == key)? {
            7 => self.parent,
            i => Some(&self.values[i]),
        }
    }
}

object_value_view!(Forloop<'_>);
object_value_view!(LoopScope<'_>);

impl ObjectView for Forloop<'_> {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        Self::KEYS.len() as i64 - i64::from(self.parent.is_none())
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(self.iter().map(|(k, _)| k))
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(self.iter().map(|(_, v)| v))
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(
            Self::KEYS
                .iter()
                .filter_map(|k| Some((KStringCow::from_static(k), self.value(k)?))),
        )
    }
    fn contains_key(&self, index: &str) -> bool {
        self.value(index).is_some()
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        self.value(index)
    }
}

impl ObjectView for LoopScope<'_> {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        2
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(
            [
                KStringCow::from_ref(self.variable),
                KStringCow::from_static("forloop"),
            ]
            .into_iter(),
        )
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new([self.item, &self.forloop as &dyn ValueView].into_iter())
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(self.keys().zip(self.values()))
    }
    fn contains_key(&self, index: &str) -> bool {
        index == self.variable || index == "forloop"
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        if index == self.variable {
            Some(self.item)
        } else if index == "forloop" {
            Some(&self.forloop)
        } else {
            None
        }
    }
}
