//! The way into a tree: every template of a method starts with a run of literal bytes (at least
//! its `/`), so the path's first bytes (up to eight, as many as the shortest run) either are one
//! template's, which leads to one node past them, or are no template's, and the path matches
//! nothing. One table look-up does what the first steps of the walk would do, and turns most
//! paths that are not restricted away without a walk.

/// The first bytes of the method's templates, each with the node that follows them, in an
/// open-addressing table with a multiplicative hash.
#[derive(Clone, Debug)]
pub(super) struct Gate {
    /// How many bytes the key has: the shortest literal run a template starts with, at most eight.
    len: usize,
    multiplier: u64,
    shift: u32,
    /// The keys (bytes as a little-endian word, zero-padded) and their nodes.
    slots: Box<[Option<(u64, usize)>]>,
}

impl Gate {
    /// The gate over `entries`: first `len` bytes (`len` at most eight) and the node after them.
    pub(super) fn new(len: usize, entries: &[(&[u8], usize)]) -> Self {
        let keys: Vec<(u64, usize)> = entries
            .iter()
            .filter_map(|(head, node)| Some((word(head.get(..len)?)?, *node)))
            .collect();
        let size = (keys.len() * 4).next_power_of_two().max(8);
        let shift = 64 - size.trailing_zeros();
        // A multiplier under which no two keys share a slot, so that a look-up probes once; if
        // none of these does, a collision only costs a second probe.
        let mut multiplier = 1;
        for attempt in 0..64u64 {
            multiplier = 0x9E37_79B9_7F4A_7C15_u64.wrapping_mul(2 * attempt + 1) | 1;
            let mut slots: Vec<u64> = keys
                .iter()
                .map(|(key, _)| slot(*key, multiplier, shift))
                .collect();
            slots.sort_unstable();
            slots.dedup();
            if slots.len() == keys.len() {
                break;
            }
        }
        let mut slots = vec![None; size].into_boxed_slice();
        let mask = size as u64 - 1;
        for (key, node) in keys {
            let mut at = slot(key, multiplier, shift);
            while slots.get(at as usize).is_some_and(Option::is_some) {
                at = (at + 1) & mask;
            }
            if let Some(free) = slots.get_mut(at as usize) {
                *free = Some((key, node));
            }
        }
        Gate {
            len,
            multiplier,
            shift,
            slots,
        }
    }

    /// The node after `path`'s first bytes and the rest of `path`, or `None` if no template starts
    /// as `path` does.
    #[inline(always)]
    pub(super) fn enter<'p>(&self, path: &'p [u8]) -> Option<(usize, &'p [u8])> {
        let key = match path.first_chunk::<8>() {
            Some(first) if self.len == 8 => u64::from_le_bytes(*first),
            _ => word(path.get(..self.len)?)?,
        };
        let mask = self.slots.len() as u64 - 1;
        let mut at = slot(key, self.multiplier, self.shift);
        loop {
            match self.slots.get(at as usize)? {
                Some((k, node)) if *k == key => return Some((*node, path.get(self.len..)?)),
                Some(_) => at = (at + 1) & mask,
                None => return None,
            }
        }
    }
}

/// Up to eight bytes as a little-endian word, zero-padded.
#[inline(always)]
fn word(bytes: &[u8]) -> Option<u64> {
    let mut word = [0u8; 8];
    if bytes.len() > word.len() {
        return None;
    }
    for (w, b) in word.iter_mut().zip(bytes) {
        *w = *b;
    }
    Some(u64::from_le_bytes(word))
}

#[inline(always)]
fn slot(key: u64, multiplier: u64, shift: u32) -> u64 {
    key.wrapping_mul(multiplier) >> shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_leads_to_its_node_and_nothing_else_gets_in() {
        // A thousand keys in 4096 slots: no multiplier keeps them all apart, so slots are probed.
        let heads: Vec<String> = (0..1000).map(|i| format!("/k{i:05}/rest")).collect();
        let entries: Vec<(&[u8], usize)> = heads
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_bytes(), i))
            .collect();
        let gate = Gate::new(8, &entries);
        for (i, head) in heads.iter().enumerate() {
            let (node, rest) = gate.enter(head.as_bytes()).unwrap();
            assert_eq!((node, rest), (i, &b"rest"[..]), "{head}");
        }
        for miss in ["/k01000/", "/k0000", "", "/", "/K00000/rest"] {
            assert!(gate.enter(miss.as_bytes()).is_none(), "{miss}");
        }
    }

    #[test]
    fn short_keys_and_the_empty_key() {
        let gate = Gate::new(2, &[(b"/a".as_slice(), 1), (b"/b".as_slice(), 2)]);
        assert_eq!(gate.enter(b"/a"), Some((1, &b""[..])));
        assert_eq!(gate.enter(b"/bc"), Some((2, &b"c"[..])));
        assert_eq!(gate.enter(b"/c"), None);
        assert_eq!(gate.enter(b"/"), None);
        let open = Gate::new(0, &[(b"".as_slice(), 0)]);
        assert_eq!(open.enter(b""), Some((0, &b""[..])));
        assert_eq!(open.enter(b"/x"), Some((0, &b"/x"[..])));
    }
}
