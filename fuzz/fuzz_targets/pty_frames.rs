//! The PTY host's frame decoder: no frame over 64 KiB, the same frames (and the same error)
//! in any chunking, and the frames re-encode to exactly the bytes they were read from. The
//! first input byte picks a chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rein::worker::pty::{Frame, FrameDecoder, ProtocolError, MAX_PAYLOAD};

fn decode<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, Option<ProtocolError>) {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let whole = decode([bytes]);
    assert_eq!(decode(bytes.chunks(usize::from(chunk % 64) + 1)), whole);
    assert_eq!(decode(bytes.chunks(1)), whole);
    let mut encoded = Vec::new();
    for frame in &whole.0 {
        match frame {
            Frame::Data(payload) => {
                assert!(payload.len() <= MAX_PAYLOAD);
                if payload.is_empty() {
                    // encode_data sends nothing for nothing; the frame on the wire was this.
                    encoded.extend_from_slice(&[2, 0, 0, 0, 0]);
                }
            }
            Frame::Input { text, .. } => assert!(text.len() < MAX_PAYLOAD),
            Frame::Reply(json) => assert!(json.len() <= MAX_PAYLOAD),
            Frame::Hello { .. }
            | Frame::Resize(_)
            | Frame::Detach
            | Frame::Exited { .. }
            | Frame::Replaced
            | Frame::Screen => {}
        }
        frame.encode(&mut encoded);
    }
    assert!(encoded.len() <= bytes.len());
    assert_eq!(&encoded[..], &bytes[..encoded.len()], "re-encoding differs");
});
