//! Inline opc kernels in Rust: the DSL source is type-checked while the Rust crate compiles, so a
//! malformed kernel is a Rust compile error showing opc's own diagnostic (file:line:col, caret,
//! help), not a run-time surprise.
//!
//! ```ignore
//! const SOFTMAX: &str = opc_macros::kernel_source!(r#"
//!     kernel softmax(x: f32[T, V], y: out f32[T, V]) where const V grid(T) { ... }
//! "#);
//! let k = opc_dsl::compile("inline", SOFTMAX, "softmax", &Instance::default().konst("V", 512))?;
//! ```

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, LitStr};

/// Check the kernels in a string literal and expand to that string (`&'static str`).
#[proc_macro]
pub fn kernel_source(input: TokenStream) -> TokenStream {
    let lit = parse_macro_input!(input as LitStr);
    let src = lit.value();
    match opc_dsl::check("<inline kernel>", &src) {
        Ok(_) => quote!(#lit).into(),
        Err(d) => {
            let msg = format!("opc kernel does not compile:\n{d}");
            syn::Error::new(lit.span(), msg).to_compile_error().into()
        }
    }
}

/// Check a `.opc` file (path relative to the crate's `Cargo.toml`) and expand to
/// `include_str!` of it, so cargo rebuilds when the file changes.
#[proc_macro]
pub fn include_kernels(input: TokenStream) -> TokenStream {
    let lit = parse_macro_input!(input as LitStr);
    let rel = lit.value();
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let path = std::path::Path::new(&dir).join(&rel);
    let src = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => {
            return syn::Error::new(lit.span(), format!("cannot read {}: {e}", path.display())).to_compile_error().into()
        }
    };
    match opc_dsl::check(&rel, &src) {
        Ok(_) => {
            let p = path.display().to_string();
            quote!(include_str!(#p)).into()
        }
        Err(d) => syn::Error::new(lit.span(), format!("opc kernel does not compile:\n{d}")).to_compile_error().into(),
    }
}
