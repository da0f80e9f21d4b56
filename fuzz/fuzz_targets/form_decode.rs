//! Fuzzes Stripe's nested form encoding as the simulator decodes it: any body decodes to a JSON
//! object or a clear error, never a panic, a stack overflow or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stripe_sim::form::{Params, decode};

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = decode(data) {
        assert!(tree.is_object());
        for name in ["items", "expand", "metadata", "quantity", "cancel_at_period_end"] {
            let _ = tree.str_param(name);
            let _ = tree.int_param(name);
            let _ = tree.bool_param(name);
            let _ = tree.list_param(name);
        }
    }
});
