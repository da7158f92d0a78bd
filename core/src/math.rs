//! Scalar float functions with the rounding llama2.c gets from its C library.
//!
//! With the `std` feature these call the platform math library (`expf`,
//! `powf`, `cosf`, `sinf`, `roundf` from glibc on Linux), the same functions
//! run.c calls, so hosted builds are bit-exact with it. Without `std` they
//! come from the `libm` crate, whose results are within 1 ulp per call:
//! greedy output almost always survives that, sampled output may not.
//! `sqrtf` is correctly rounded on both paths.

#[cfg(feature = "std")]
mod imp {
    pub fn expf(x: f32) -> f32 {
        x.exp()
    }
    pub fn powf(x: f32, y: f32) -> f32 {
        x.powf(y)
    }
    pub fn cosf(x: f32) -> f32 {
        x.cos()
    }
    pub fn sinf(x: f32) -> f32 {
        x.sin()
    }
    pub fn sqrtf(x: f32) -> f32 {
        x.sqrt()
    }
    pub fn roundf(x: f32) -> f32 {
        x.round()
    }
}

#[cfg(not(feature = "std"))]
mod imp {
    pub fn expf(x: f32) -> f32 {
        libm::expf(x)
    }
    pub fn powf(x: f32, y: f32) -> f32 {
        libm::powf(x, y)
    }
    pub fn cosf(x: f32) -> f32 {
        libm::cosf(x)
    }
    pub fn sinf(x: f32) -> f32 {
        libm::sinf(x)
    }
    pub fn sqrtf(x: f32) -> f32 {
        libm::sqrtf(x)
    }
    pub fn roundf(x: f32) -> f32 {
        libm::roundf(x)
    }
}

/// e raised to `x`.
#[inline]
pub fn expf(x: f32) -> f32 {
    imp::expf(x)
}

/// `x` raised to `y`.
#[inline]
pub fn powf(x: f32, y: f32) -> f32 {
    imp::powf(x, y)
}

/// Cosine of `x` radians.
#[inline]
pub fn cosf(x: f32) -> f32 {
    imp::cosf(x)
}

/// Sine of `x` radians.
#[inline]
pub fn sinf(x: f32) -> f32 {
    imp::sinf(x)
}

/// Square root, correctly rounded.
#[inline]
pub fn sqrtf(x: f32) -> f32 {
    imp::sqrtf(x)
}

/// Rounds half away from zero, like C's `round`.
#[inline]
pub fn roundf(x: f32) -> f32 {
    imp::roundf(x)
}
