//! Liquid's view of kinesync's object-like types (a row, the template globals, a loop scope).
//!
//! Where it sits: while a template renders a row (compiled payload → rendered JSON message),
//! these are what Liquid reads names from.

/// Implements `ValueView` for a type in terms of its `ObjectView`: an object that is always
/// truthy and never empty, rendered and converted the way liquid renders its own objects.
macro_rules! object_value_view {
    ($t:ty) => {
        impl liquid_core::ValueView for $t {
            fn as_debug(&self) -> &dyn std::fmt::Debug {
                self
            }
            fn render(&self) -> liquid_core::model::DisplayCow<'_> {
                liquid_core::model::DisplayCow::Owned(Box::new(
                    liquid_core::model::ObjectRender::new(self),
                ))
            }
            fn source(&self) -> liquid_core::model::DisplayCow<'_> {
                liquid_core::model::DisplayCow::Owned(Box::new(
                    liquid_core::model::ObjectSource::new(self),
                ))
            }
            fn type_name(&self) -> &'static str {
                "object"
            }
            fn query_state(&self, state: liquid_core::model::State) -> bool {
                matches!(state, liquid_core::model::State::Truthy)
            }
            fn to_kstr(&self) -> liquid_core::model::KStringCow<'_> {
                self.render().to_string().into()
            }
            fn to_value(&self) -> liquid_core::Value {
                use liquid_core::ObjectView;
                liquid_core::Value::Object(
                    self.iter()
                        .map(|(k, v)| (k.into_owned(), v.to_value()))
                        .collect(),
                )
            }
            fn as_object(&self) -> Option<&dyn liquid_core::ObjectView> {
                Some(self)
            }
        }
    };
}
pub(crate) use object_value_view;
