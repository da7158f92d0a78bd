//! specdec_session_set_fast_math switches kernels without changing results
//! beyond rounding.

use std::ptr;

use specdec::*;

/// Forwards tokens 1, 5, 9 at positions 0..3 and returns the last logits.
fn last_logits(model: *const specdec_model, fast_math: bool) -> Vec<f32> {
    let mut session = ptr::null_mut();
    // SAFETY: `model` is live; every out pointer points to a local.
    unsafe {
        assert_eq!(
            specdec_session_new(model, 1, &mut session),
            specdec_status::SPECDEC_OK
        );
        assert_eq!(
            specdec_session_set_fast_math(session, fast_math),
            specdec_status::SPECDEC_OK
        );
        let mut config = specdec_config::default();
        assert_eq!(
            specdec_model_config(model, &mut config),
            specdec_status::SPECDEC_OK
        );
        let mut logits = ptr::null();
        for (pos, token) in [1i32, 5, 9].iter().enumerate() {
            assert_eq!(
                specdec_forward(session, token, 1, pos, &mut logits),
                specdec_status::SPECDEC_OK
            );
        }
        let row = std::slice::from_raw_parts(logits, config.vocab_size as usize).to_vec();
        specdec_session_free(session);
        row
    }
}

#[test]
fn fast_math_stays_close_to_exact() {
    let Some(dir) = std::env::var_os("SPECDEC_MODELS") else {
        println!(
            "SKIPPED: SPECDEC_MODELS is unset, so the test needing stories260K.bin did not run"
        );
        return;
    };
    let path = std::ffi::CString::new(
        std::path::Path::new(&dir)
            .join("stories260K.bin")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let mut model = ptr::null_mut();
    // SAFETY: a NUL-terminated path and a local out pointer.
    assert_eq!(
        unsafe { specdec_model_from_file(path.as_ptr(), &mut model) },
        specdec_status::SPECDEC_OK
    );
    let exact = last_logits(model, false);
    let again = last_logits(model, false);
    let relaxed = last_logits(model, true);
    assert!(
        exact
            .iter()
            .zip(&again)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "exact kernels must repeat bit for bit"
    );
    let max_diff = exact
        .iter()
        .zip(&relaxed)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff < 1e-3,
        "relaxed logits differ from exact ones by {max_diff}"
    );
    // SAFETY: NULL is accepted, and the model is live and freed once.
    unsafe {
        assert_eq!(
            specdec_session_set_fast_math(ptr::null_mut(), true),
            specdec_status::SPECDEC_ERR_NULL_POINTER
        );
        specdec_model_free(model);
    }
}
