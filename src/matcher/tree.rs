//! The radix tree of one HTTP method's templates.
//!
//! Nodes hold a run of literal bytes, their literal children keyed by first byte, and at most one
//! placeholder child. A lookup is a depth-first walk that tries a literal child before the
//! placeholder and comes back to the placeholder only when the literal branch fails, the order
//! `matchit` uses, so that a path matching two templates gets the one with the longer literal
//! prefix. A placeholder takes one whole, non-empty segment. The walk records no parameters: only
//! whether a placeholder took a dot segment, which makes the whole match void. The walk starts
//! past the path's first bytes, at the node the [`Gate`] finds for them.

use super::gate::Gate;

/// One template, as the tree stores it: literal bytes and whole-segment placeholders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Token {
    Byte(u8),
    Param,
}

/// A template's tokens and the value it stands for.
pub(super) type Template = (Vec<Token>, usize);

/// A node of the tree under construction: one byte per edge, compressed by [`Tree::new`].
#[derive(Default)]
struct Draft {
    value: Option<usize>,
    literals: Vec<(u8, Draft)>,
    param: Option<Box<Draft>>,
}

impl Drop for Draft {
    /// Drops the nodes under this one from a stack: the drop a compiler writes would recurse once
    /// per byte of a template.
    fn drop(&mut self) {
        let mut stack: Vec<Draft> = self.literals.drain(..).map(|(_, d)| d).collect();
        stack.extend(self.param.take().map(|d| *d));
        while let Some(mut draft) = stack.pop() {
            stack.extend(draft.literals.drain(..).map(|(_, d)| d));
            stack.extend(draft.param.take().map(|d| *d));
        }
    }
}

/// A compressed node. Its bytes live in [`Tree::bytes`] and its literal children side by side in
/// [`Tree::nodes`], so that a step of the walk loads one node and no other pointer.
#[derive(Clone, Debug, Default)]
struct Node {
    /// Where in `bytes` the node's prefix starts: the bytes every path through it has next (after
    /// the byte that chose it). The first byte of each literal child follows the prefix.
    start: usize,
    prefix: usize,
    literals: usize,
    /// The first literal child.
    first_child: usize,
    /// The operation whose template ends here.
    value: Option<usize>,
    /// The node after a placeholder segment.
    param: Option<usize>,
}

/// One method's templates, compiled.
#[derive(Clone, Debug)]
pub(super) struct Tree {
    gate: Gate,
    nodes: Vec<Node>,
    bytes: Vec<u8>,
}

/// A template whose tokens are another template's: the operation that was there first.
#[derive(Debug)]
pub(super) struct Duplicate(pub(super) usize);

impl Tree {
    /// Compiles `(tokens, value)` pairs. A template that repeats an earlier one is left out and
    /// reported with the value it collides with.
    pub(super) fn new(
        templates: impl IntoIterator<Item = Template>,
    ) -> (Self, Vec<(usize, Duplicate)>) {
        let mut root = Draft::default();
        let mut duplicates = Vec::new();
        let mut heads: Vec<Vec<u8>> = Vec::new();
        for (tokens, value) in templates {
            heads.push(
                tokens
                    .iter()
                    .map_while(|t| match t {
                        Token::Byte(b) => Some(*b),
                        Token::Param => None,
                    })
                    .collect(),
            );
            let mut at = &mut root;
            for token in tokens {
                at = match token {
                    Token::Param => at.param.get_or_insert_with(Box::default),
                    Token::Byte(b) => {
                        let i = match at.literals.iter().position(|(c, _)| *c == b) {
                            Some(i) => i,
                            None => {
                                at.literals.push((b, Draft::default()));
                                at.literals.len() - 1
                            }
                        };
                        &mut at.literals[i].1
                    }
                };
            }
            match at.value {
                Some(first) => duplicates.push((value, Duplicate(first))),
                None => at.value = Some(value),
            }
        }
        let gate_len = heads.iter().map(Vec::len).min().unwrap_or(0).min(8);
        let mut tree = Tree {
            gate: Gate::new(0, &[]),
            nodes: vec![Node::default()],
            bytes: Vec::new(),
        };
        let found = tree.fill(&root, gate_len);
        let found: Vec<(&[u8], usize)> = found
            .iter()
            .map(|(head, node)| (head.as_slice(), *node))
            .collect();
        tree.gate = Gate::new(gate_len, &found);
        (tree, duplicates)
    }

    /// Fills the nodes from the draft under `root`, each chain of single literal children folded
    /// into one prefix. A node starts at depth `gate_len` on every branch: those nodes are returned,
    /// each with the bytes that lead to it. (A loop over a stack of jobs rather than a recursion:
    /// a long catalogue template must not run out of stack.)
    fn fill(&mut self, root: &Draft, gate_len: usize) -> Vec<(Vec<u8>, usize)> {
        let mut found = Vec::new();
        // The node to fill, its draft, where it starts in a path (`usize::MAX` past a
        // placeholder) and, before the gate's depth, the bytes that lead to it.
        let mut jobs = vec![(0, root, 0, Vec::new())];
        while let Some((index, mut draft, depth, mut head)) = jobs.pop() {
            if depth == gate_len {
                found.push((head.clone(), index));
            }
            // Before the gate's depth, a chain stops where its next byte chooses a node at that
            // depth.
            let stop = match gate_len.checked_sub(1) {
                Some(last) if depth <= last => last - depth,
                _ => usize::MAX,
            };
            let start = self.bytes.len();
            while let ([(b, only)], None, None) = (&draft.literals[..], &draft.param, draft.value) {
                if self.bytes.len() - start == stop {
                    break;
                }
                self.bytes.push(*b);
                draft = only;
            }
            let prefix = self.bytes.len() - start;
            let child_depth = depth.saturating_add(prefix + 1);
            if child_depth <= gate_len {
                head.extend_from_slice(self.bytes.get(start..).unwrap_or_default());
            }
            self.bytes.extend(draft.literals.iter().map(|(b, _)| *b));
            let first_child = self.nodes.len();
            let literals = draft.literals.len();
            self.nodes.resize(first_child + literals, Node::default());
            for (i, (b, child)) in draft.literals.iter().enumerate() {
                let mut child_head = Vec::new();
                if child_depth <= gate_len {
                    child_head.extend_from_slice(&head);
                    child_head.push(*b);
                }
                jobs.push((first_child + i, child, child_depth, child_head));
            }
            let param = draft.param.as_deref().map(|child| {
                let at = self.nodes.len();
                self.nodes.push(Node::default());
                jobs.push((at, child, usize::MAX, Vec::new()));
                at
            });
            if let Some(node) = self.nodes.get_mut(index) {
                *node = Node {
                    start,
                    prefix,
                    literals,
                    first_child,
                    value: draft.value,
                    param,
                };
            }
        }
        found
    }

    /// The value of the template `path` matches, if any; `None` as well when the match puts a dot
    /// segment (`.` or `..`) in a placeholder.
    #[inline]
    pub(super) fn find(&self, path: &[u8]) -> Option<usize> {
        let (at, path) = self.gate.enter(path)?;
        match self.walk(at, path, false)? {
            (_, true) => None,
            (value, false) => Some(value),
        }
    }

    /// The walk from node `at` over `path`: the value found, and whether a placeholder on the way
    /// (`dot` coming in) took a dot segment.
    #[inline]
    fn walk(&self, mut at: usize, mut path: &[u8], mut dot: bool) -> Option<(usize, bool)> {
        loop {
            let node = self.nodes.get(at)?;
            let prefix = self.bytes.get(node.start..node.start + node.prefix)?;
            if !starts_with(path, prefix) {
                return None;
            }
            path = path.get(prefix.len()..)?;
            let Some((&next, rest)) = path.split_first() else {
                return node.value.map(|value| (value, dot));
            };
            let first = self.bytes.get(node.start + node.prefix..)?;
            let first = first.get(..node.literals)?;
            if let Some(i) = first.iter().position(|&b| b == next) {
                let child = node.first_child + i;
                if node.param.is_none() {
                    at = child;
                    path = rest;
                    continue;
                }
                // Both a literal and a placeholder could go on: the literal first, then back here.
                if let Some(found) = self.branch(child, rest, dot) {
                    return Some(found);
                }
            }
            at = node.param?;
            let end = path.iter().position(|&b| b == b'/').unwrap_or(path.len());
            let (segment, rest) = path.split_at(end);
            if segment.is_empty() {
                return None;
            }
            dot |= matches!(segment, b"." | b"..");
            path = rest;
        }
    }

    /// [`walk`](Self::walk) down a literal branch that may fail back to a placeholder: out of line,
    /// so that the walk itself, which recurses only here, can be inlined into the lookup.
    #[inline(never)]
    fn branch(&self, at: usize, path: &[u8], dot: bool) -> Option<(usize, bool)> {
        self.walk(at, path, dot)
    }
}

/// Whether `path` starts with `prefix`. Not `<[u8]>::starts_with`: slice equality calls libc's
/// `memcmp`, which costs more than a whole step of the walk on prefixes this short. This compares
/// eight bytes at a time and ends on the last eight, overlapping the chunk before.
#[inline(always)]
fn starts_with(path: &[u8], prefix: &[u8]) -> bool {
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    if prefix.len() >= 8 {
        let word = |chunk: &[u8; 8]| u64::from_ne_bytes(*chunk);
        let (chunks, _) = head.as_chunks::<8>();
        let (expected, _) = prefix.as_chunks::<8>();
        chunks.iter().zip(expected).all(|(a, b)| word(a) == word(b))
            && head.last_chunk::<8>().map(word) == prefix.last_chunk::<8>().map(word)
    } else if prefix.len() >= 4 {
        let word = |chunk: &[u8; 4]| u32::from_ne_bytes(*chunk);
        head.first_chunk::<4>().map(word) == prefix.first_chunk::<4>().map(word)
            && head.last_chunk::<4>().map(word) == prefix.last_chunk::<4>().map(word)
    } else {
        head.iter().zip(prefix).all(|(a, b)| a == b)
    }
}
