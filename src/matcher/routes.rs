//! Any list of `(method, template)` pairs, compiled into one radix tree per method: a lookup gives
//! the position in the list of the template a path matches. Both the [`Matcher`](super::Matcher) of
//! a restricted catalogue and the classification of [`UsagePlans`](crate::catalog::UsagePlans) are
//! built on it.

use std::borrow::Cow;

use http::Method;

use super::tree::{Duplicate, Template, Token, Tree};

/// The compiled templates.
#[derive(Clone, Debug)]
pub(super) struct Routes {
    // One tree per method that has at least one template.
    trees: Vec<(Method, Tree)>,
}

/// Why one template of the list was left out.
#[derive(Debug)]
pub(super) enum RouteError {
    /// The template is not a path of whole segments and placeholders.
    Malformed(&'static str),
    /// The template, placeholders renamed, is an earlier one's of the same method (that route).
    Overlaps(String),
}

impl RouteError {
    /// The reason, as a catalogue error states it.
    pub(super) fn reason(&self) -> Cow<'static, str> {
        match self {
            RouteError::Malformed(reason) => Cow::Borrowed(reason),
            RouteError::Overlaps(with) => {
                Cow::Owned(format!("overlaps another operation's template (`{with}`)"))
            }
        }
    }
}

impl Routes {
    /// Compiles the templates of `list`, each standing for its position. Returns what could be
    /// compiled and, in list order, the position and fault of each template that could not.
    pub(super) fn compile<'a>(
        list: impl IntoIterator<Item = (&'a Method, &'a str)>,
    ) -> (Self, Vec<(usize, RouteError)>) {
        let mut errors: Vec<(usize, RouteError)> = Vec::new();
        let mut by_method: Vec<(Method, Vec<Template>)> = Vec::new();
        let mut routes = Vec::new();
        for (index, (method, template)) in list.into_iter().enumerate() {
            let route = match route_of(template) {
                Ok(route) => route,
                Err(reason) => {
                    errors.push((index, RouteError::Malformed(reason)));
                    routes.push(String::new());
                    continue;
                }
            };
            let tokens = tokens_of(&route);
            routes.push(route);
            match by_method.iter_mut().find(|(m, _)| m == method) {
                Some((_, templates)) => templates.push((tokens, index)),
                None => by_method.push((method.clone(), vec![(tokens, index)])),
            }
        }
        let mut trees = Vec::with_capacity(by_method.len());
        for (method, templates) in by_method {
            let (tree, duplicates) = Tree::new(templates);
            for (index, Duplicate(first)) in duplicates {
                let with = routes.get(first).cloned().unwrap_or_default();
                errors.push((index, RouteError::Overlaps(with)));
            }
            trees.push((method, tree));
        }
        errors.sort_by_key(|(index, _)| *index);
        (Routes { trees }, errors)
    }

    /// The position of the template that `method` and `path` match, if any.
    #[inline]
    pub(super) fn find(&self, method: &Method, path: &str) -> Option<usize> {
        let (_, tree) = self.trees.iter().find(|(m, _)| m == method)?;
        tree.find(path.as_bytes())
    }
}

/// Turns a model template into a route, checking its shape. Placeholders are renamed (`{p0}`,
/// `{p1}`, ...) so that two templates that differ only in placeholder names collide.
fn route_of(template: &str) -> Result<String, &'static str> {
    if !template.starts_with('/') {
        return Err("the template must start with `/`");
    }
    if template.contains(['?', '#', '*']) {
        return Err("the template must be a bare path (no `?`, `#` or `*`)");
    }
    let mut route = String::with_capacity(template.len());
    let mut placeholders = 0;
    for (i, segment) in template.split('/').enumerate().skip(1) {
        if segment.is_empty() && i + 1 < template.split('/').count() {
            return Err("the template has an empty segment");
        }
        route.push('/');
        if segment.starts_with('{') && segment.ends_with('}') && segment.len() > 2 {
            let name = &segment[1..segment.len() - 1];
            if name.contains(['{', '}']) {
                return Err("malformed placeholder");
            }
            route.push_str(&format!("{{p{placeholders}}}"));
            placeholders += 1;
        } else if segment.contains(['{', '}']) {
            return Err("a placeholder must fill a whole path segment");
        } else {
            route.push_str(segment);
        }
    }
    Ok(route)
}

/// The tokens of a route from [`route_of`]: its bytes, each `{pN}` segment a placeholder.
fn tokens_of(route: &str) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(route.len());
    for segment in route.split('/').skip(1) {
        tokens.push(Token::Byte(b'/'));
        if segment.starts_with('{') {
            tokens.push(Token::Param);
        } else {
            tokens.extend(segment.bytes().map(Token::Byte));
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_template_per_method_and_shape() {
        let get = Method::GET;
        let post = Method::POST;
        let (routes, errors) = Routes::compile([
            (&get, "/a/{x}"),
            (&post, "/a/{x}"),
            (&get, "/a/b"),
            (&get, "/a/{y}"),
            (&get, "a"),
        ]);
        let faults: Vec<(usize, String)> = errors
            .iter()
            .map(|(index, e)| (*index, e.reason().into_owned()))
            .collect();
        assert_eq!(
            faults,
            [
                (
                    3,
                    "overlaps another operation's template (`/a/{p0}`)".to_owned()
                ),
                (4, "the template must start with `/`".to_owned()),
            ]
        );
        assert_eq!(routes.find(&get, "/a/1"), Some(0));
        assert_eq!(routes.find(&post, "/a/1"), Some(1));
        assert_eq!(routes.find(&get, "/a/b"), Some(2));
        assert_eq!(routes.find(&Method::PUT, "/a/1"), None);
    }
}
