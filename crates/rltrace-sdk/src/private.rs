//! Support code for what `#[rl_triplet]` generates. Not a public API: names and signatures may
//! change in any release.
//!
//! The return value is inspected with autoref specialization: `(&Wrap(&v)).method()` picks the
//! trait implemented for `Wrap<T>` when `T` qualifies (a `Result`, a `Serialize` type, a
//! `Display` error) and the one implemented for `&Wrap<T>` otherwise, at compile time, on the
//! concrete type of each instrumented function.

use std::any::Any;
use std::fmt::Display;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::Context;
use serde::Serialize;

pub use crate::runtime::{Call, FnMeta, Keys, Outcome, Scope, StateWriter, StaticKey};

/// A reference wrapped for autoref specialization.
pub struct Wrap<'a, T: ?Sized>(pub &'a T);

/// A value that makes the body closure `FnOnce` when moved into it.
pub struct Once;

impl Once {
    /// Consume the value.
    #[inline(always)]
    pub fn consume(self) {}
}

/// `Result<T, E>`: split into the ok value or the error.
pub trait OutcomeResult<'a> {
    /// The ok type.
    type Ok: ?Sized + 'a;
    /// The error type.
    type Err: ?Sized + 'a;
    /// Split.
    fn __rl_split(&self) -> Result<&'a Self::Ok, &'a Self::Err>;
}

impl<'a, T, E> OutcomeResult<'a> for Wrap<'a, Result<T, E>> {
    type Ok = T;
    type Err = E;
    fn __rl_split(&self) -> Result<&'a T, &'a E> {
        self.0.as_ref()
    }
}

/// Any other value: always a success.
pub trait OutcomeAny<'a> {
    /// The value's type.
    type Ok: ?Sized + 'a;
    /// Never constructed.
    type Err: 'a;
    /// Split.
    fn __rl_split(&self) -> Result<&'a Self::Ok, &'a Self::Err>;
}

/// The error type of values that are not a `Result`.
#[derive(Debug)]
pub enum NoError {}

impl<'a, T: ?Sized> OutcomeAny<'a> for &Wrap<'a, T> {
    type Ok = T;
    type Err = NoError;
    fn __rl_split(&self) -> Result<&'a T, &'a NoError> {
        Ok(self.0)
    }
}

/// A `Serialize` output: recorded (size, hash and value).
pub trait SerOutput {
    /// Record.
    fn __rl_output(&self, o: &mut Outcome);
}

impl<T: Serialize + ?Sized> SerOutput for Wrap<'_, T> {
    fn __rl_output(&self, o: &mut Outcome) {
        o.output(self.0);
    }
}

/// Any other output: not recorded.
pub trait SerOutputAny {
    /// Record nothing.
    fn __rl_output(&self, o: &mut Outcome);
}

impl<T: ?Sized> SerOutputAny for &Wrap<'_, T> {
    fn __rl_output(&self, _: &mut Outcome) {}
}

/// An error with `Display`: its message.
pub trait ErrMsg {
    /// The message.
    fn __rl_err_msg(&self) -> Option<String>;
}

impl<T: Display + ?Sized> ErrMsg for Wrap<'_, T> {
    fn __rl_err_msg(&self) -> Option<String> {
        Some(self.0.to_string())
    }
}

/// An error without `Display`: no message.
pub trait ErrMsgAny {
    /// No message.
    fn __rl_err_msg(&self) -> Option<String>;
}

impl<T: ?Sized> ErrMsgAny for &Wrap<'_, T> {
    fn __rl_err_msg(&self) -> Option<String> {
        None
    }
}

/// A key that is a string: copied once into the shared string.
pub trait KeyStr {
    /// The shared string.
    fn __rl_key(&self) -> Arc<str>;
}

macro_rules! key_str {
    ($($t:ty),*) => {$(
        impl KeyStr for Wrap<'_, $t> {
            fn __rl_key(&self) -> Arc<str> {
                Arc::from(AsRef::<str>::as_ref(self.0))
            }
        }
    )*};
}
key_str!(str, &str, String, &String, Box<str>, Arc<str>, std::borrow::Cow<'_, str>);

/// Any other key: its `Display` text.
pub trait KeyDisplay {
    /// The shared string.
    fn __rl_key(&self) -> Arc<str>;
}

impl<T: Display + ?Sized> KeyDisplay for &Wrap<'_, T> {
    fn __rl_key(&self) -> Arc<str> {
        Arc::from(self.0.to_string())
    }
}

/// The type name of a value.
pub fn type_name_of<T: ?Sized>(_: &T) -> &'static str {
    std::any::type_name::<T>()
}

pin_project_lite::pin_project! {
    /// Polls an instrumented async body with the triplet's context current, and catches a panic
    /// so the triplet records it before it is resumed.
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        cx: Option<Context>,
    }
}

impl<F> Instrumented<F> {
    /// Wrap a future.
    pub fn new(inner: F, cx: Option<Context>) -> Self {
        Instrumented { inner, cx }
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _guard = this.cx.as_ref().map(|c| c.clone().attach());
        let mut inner = this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(task))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}
