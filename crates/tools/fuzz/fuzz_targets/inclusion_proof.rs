#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    retro_fuzz::checks::inclusion_proof(data);
});
