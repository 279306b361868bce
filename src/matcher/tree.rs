//! The radix tree of one HTTP method's templates.
//!
//! Nodes hold a run of literal bytes, their literal children keyed by first byte, and at most one
//! placeholder child. A lookup is a depth-first walk that tries a literal child before the
//! placeholder and comes back to the placeholder only when the literal branch fails, the order
//! `matchit` uses, so that a path matching two templates gets the one with the longer literal
//! prefix. A placeholder takes one whole, non-empty segment. The walk records no parameters: only
//! whether a placeholder took a dot segment, which makes the whole match void.

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

/// A compressed node. Children are indexes into [`Tree::nodes`].
#[derive(Clone, Debug)]
struct Node {
    /// The bytes every path through this node has next (after the byte that chose it).
    prefix: Box<[u8]>,
    /// The operation whose template ends here.
    value: Option<usize>,
    /// The first byte of each literal child, and the child it leads to.
    first: Box<[u8]>,
    literals: Box<[usize]>,
    /// The node after a placeholder segment.
    param: Option<usize>,
}

/// One method's templates, compiled.
#[derive(Clone, Debug)]
pub(super) struct Tree {
    nodes: Vec<Node>,
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
        for (tokens, value) in templates {
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
        let mut tree = Tree { nodes: Vec::new() };
        tree.flatten(&root);
        (tree, duplicates)
    }

    /// Appends `draft` and everything under it, a chain of single literal children folded into one
    /// prefix; returns its index.
    fn flatten(&mut self, mut draft: &Draft) -> usize {
        let mut prefix = Vec::new();
        while let ([(b, only)], None, None) = (&draft.literals[..], &draft.param, draft.value) {
            prefix.push(*b);
            draft = only;
        }
        let index = self.nodes.len();
        self.nodes.push(Node {
            prefix: prefix.into(),
            value: draft.value,
            first: draft.literals.iter().map(|(b, _)| *b).collect(),
            literals: Box::default(),
            param: None,
        });
        let literals: Box<[usize]> = draft
            .literals
            .iter()
            .map(|(_, child)| self.flatten(child))
            .collect();
        let param = draft.param.as_deref().map(|child| self.flatten(child));
        if let Some(node) = self.nodes.get_mut(index) {
            node.literals = literals;
            node.param = param;
        }
        index
    }

    /// The value of the template `path` matches, if any; `None` as well when the match puts a dot
    /// segment (`.` or `..`) in a placeholder.
    #[inline]
    pub(super) fn find(&self, path: &[u8]) -> Option<usize> {
        match self.walk(0, path, false)? {
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
            // Not `strip_prefix`: slice equality calls libc's `memcmp`, which costs more than the
            // whole walk on prefixes this short.
            if !memchr::arch::all::is_prefix(path, &node.prefix) {
                return None;
            }
            path = path.get(node.prefix.len()..)?;
            let Some((&next, rest)) = path.split_first() else {
                return node.value.map(|value| (value, dot));
            };
            if let Some(i) = node.first.iter().position(|&b| b == next) {
                let child = *node.literals.get(i)?;
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
