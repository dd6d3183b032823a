//! The names a template reads while one row renders: the globals (`row`, `event`,
//! `previous`), each loop's variable and `forloop`, and what the template stores itself
//! (`assign`, `capture`, counters).
//!
//! Where it sits: compiled payload + **these frames** → rendered JSON message. They stand in
//! for liquid's own frames so that a row's values are lent to the template, not copied per
//! row. Paths are followed by `lookup.rs`.

use std::cell::RefCell;

use liquid_core::model::{ObjectView, ScalarCow, ValueCow};
use liquid_core::{Runtime, ValueView};

use super::lookup;

/// A frame of names (the template's globals, or a loop's variable and `forloop`).
///
/// Liquid's own `StackFrame` answers every `get` with an owned copy of the value found, so a
/// template reading ten string columns clones ten strings per row. The row outlives the
/// render, so this frame lends the values instead. Lookups otherwise behave as liquid's: this
/// frame's names first, then the parent's.
pub(super) struct Frame<'g, P> {
    pub(super) parent: P,
    pub(super) names: &'g dyn ObjectView,
}

impl<P: Runtime> Runtime for Frame<'_, P> {
    fn partials(&self) -> &dyn liquid_core::runtime::PartialStore {
        self.parent.partials()
    }
    fn name(&self) -> Option<liquid_core::model::KStringRef<'_>> {
        self.parent.name()
    }
    fn roots(&self) -> std::collections::BTreeSet<liquid_core::model::KStringCow<'_>> {
        let mut roots = self.parent.roots();
        roots.extend(self.names.keys());
        roots
    }
    fn try_get(&self, path: &[ScalarCow<'_>]) -> Option<ValueCow<'_>> {
        let (first, rest) = path.split_first()?;
        match self.names.get(first.to_kstr().as_str()) {
            Some(value) => lookup::try_find(value, rest),
            None => self.parent.try_get(path),
        }
    }
    fn get(&self, path: &[ScalarCow<'_>]) -> liquid_core::Result<ValueCow<'_>> {
        let Some((first, rest)) = path.split_first() else {
            return self.parent.get(path);
        };
        match self.names.get(first.to_kstr().as_str()) {
            // Through the frame's own object, so that an error names the whole path.
            Some(_) if !rest.is_empty() => lookup::find(self.names.as_value(), path),
            Some(value) => Ok(ValueCow::Borrowed(value)),
            None => self.parent.get(path),
        }
    }
    fn set_global(
        &self,
        name: liquid_core::model::KString,
        val: liquid_core::Value,
    ) -> Option<liquid_core::Value> {
        self.parent.set_global(name, val)
    }
    fn set_index(
        &self,
        name: liquid_core::model::KString,
        val: liquid_core::Value,
    ) -> Option<liquid_core::Value> {
        self.parent.set_index(name, val)
    }
    fn get_index<'a>(&'a self, name: &str) -> Option<ValueCow<'a>> {
        self.parent.get_index(name)
    }
    fn registers(&self) -> &liquid_core::runtime::Registers {
        self.parent.registers()
    }
}

/// The top frame: what `{% assign %}`, `{% capture %}`, `{% increment %}` and
/// `{% decrement %}` store while a row renders. It stands where liquid's `GlobalFrame` does,
/// above the globals, so an assigned name shadows a global one as in liquid; and it holds the
/// counters too (liquid keeps them in a frame that is not public). Most templates store
/// nothing, so a lookup costs one emptiness check here.
#[derive(Default)]
pub(super) struct Scratch<P> {
    parent: P,
    assigned: RefCell<liquid_core::Object>,
    counters: RefCell<liquid_core::Object>,
}

impl<P> Scratch<P> {
    /// Nothing stored yet, above `parent`.
    pub(super) fn new(parent: P) -> Self {
        Self {
            parent,
            assigned: RefCell::default(),
            counters: RefCell::default(),
        }
    }
}

impl<P: Runtime> Scratch<P> {
    /// The stored value at `path`, if its first name was stored.
    fn find(&self, path: &[ScalarCow<'_>]) -> Option<liquid_core::Result<ValueCow<'static>>> {
        for store in [&self.assigned, &self.counters] {
            let store = store.borrow();
            if store.is_empty() {
                continue;
            }
            if let Some(key) = path.first()
                && store.contains_key(key.to_kstr().as_str())
            {
                let found = lookup::find(store.as_value(), path);
                return Some(found.map(|v| ValueCow::Owned(v.into_owned())));
            }
        }
        None
    }
}

impl<P: Runtime> Runtime for Scratch<P> {
    fn partials(&self) -> &dyn liquid_core::runtime::PartialStore {
        self.parent.partials()
    }
    fn name(&self) -> Option<liquid_core::model::KStringRef<'_>> {
        self.parent.name()
    }
    fn roots(&self) -> std::collections::BTreeSet<liquid_core::model::KStringCow<'_>> {
        let mut roots = self.parent.roots();
        roots.extend(self.assigned.borrow().keys().map(|k| k.clone().into()));
        roots
    }
    fn try_get(&self, path: &[ScalarCow<'_>]) -> Option<ValueCow<'_>> {
        match self.find(path) {
            Some(found) => found.ok(),
            None => self.parent.try_get(path),
        }
    }
    fn get(&self, path: &[ScalarCow<'_>]) -> liquid_core::Result<ValueCow<'_>> {
        match self.find(path) {
            Some(found) => found,
            None => self.parent.get(path),
        }
    }
    fn set_global(
        &self,
        name: liquid_core::model::KString,
        val: liquid_core::Value,
    ) -> Option<liquid_core::Value> {
        self.assigned.borrow_mut().insert(name, val)
    }
    fn set_index(
        &self,
        name: liquid_core::model::KString,
        val: liquid_core::Value,
    ) -> Option<liquid_core::Value> {
        self.counters.borrow_mut().insert(name, val)
    }
    fn get_index<'a>(&'a self, name: &str) -> Option<ValueCow<'a>> {
        self.counters
            .borrow()
            .get(name)
            .map(|v| ValueCow::Owned(v.clone()))
    }
    fn registers(&self) -> &liquid_core::runtime::Registers {
        self.parent.registers()
    }
}
