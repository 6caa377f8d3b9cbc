//! The systemd private-socket rewriter: the stream zbus reads is exactly as long as what
//! systemd sent and differs only where a sender's first byte became `:`; a well-formed
//! stream is rewritten the same in any chunking. The first input byte picks a chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::systemd::private_socket::rewrite;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let whole = rewrite([bytes]);
    assert_eq!(whole.len(), bytes.len());
    for (out, original) in whole.iter().zip(bytes) {
        assert!(
            out == original || *out == b':',
            "{original:#04x} became {out:#04x}"
        );
    }
    let chunked = rewrite(bytes.chunks(usize::from(chunk % 64) + 1));
    assert_eq!(chunked.len(), bytes.len());
    for (out, original) in chunked.iter().zip(bytes) {
        assert!(out == original || *out == b':');
    }
});
