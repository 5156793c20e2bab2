//! `retro log --graph`: the checkpoints reachable from a revision in topological order (each
//! after all of its children, a first parent's line followed before a second parent's) and the
//! ASCII lanes that join them, as git draws them: `*` a checkpoint, `|` a lane going on, `\` a
//! merge opening a lane for its second parent, `/` a lane joining another.

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use depot::{Depot, HistoryOrder, ObjectId};

/// One checkpoint to draw: its id, its parents and its text.
pub struct Row {
    /// The checkpoint.
    pub id: ObjectId,
    /// Its parents, in order.
    pub parents: Vec<ObjectId>,
    /// What is printed after its lanes.
    pub text: String,
}

/// The checkpoints reachable from `start`, ids and parents, newest first in topological order:
/// a checkpoint comes after every child of it that is reachable, and after a merge its first
/// parent's line is followed before its second's. Walks every ancestor (the commit-graph's rows
/// in a native depot).
pub fn topological(depot: &Depot, start: ObjectId) -> Result<Vec<(ObjectId, Vec<ObjectId>)>> {
    let mut parents: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
    let mut children: HashMap<ObjectId, usize> = HashMap::new();
    depot.walk_ids(start, HistoryOrder::Full, |entry| {
        for parent in &entry.parents {
            *children.entry(*parent).or_default() += 1;
        }
        parents.insert(entry.id, entry.parents.clone());
        Ok(true)
    })?;
    let mut order = Vec::with_capacity(parents.len());
    let mut stack = vec![start];
    let mut emitted = HashSet::new();
    while let Some(id) = stack.pop() {
        if !emitted.insert(id) {
            continue;
        }
        let own = parents.get(&id).cloned().unwrap_or_default();
        // The first parent is pushed last, so it is drawn next.
        for parent in own.iter().rev() {
            let left = children.get_mut(parent).expect("counted in the walk");
            *left -= 1;
            if *left == 0 {
                stack.push(*parent);
            }
        }
        order.push((id, own));
    }
    Ok(order)
}

/// The lines of the graph of `rows` (in the order [`topological`] gives).
pub fn draw(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    // The checkpoint each lane waits for.
    let mut lanes: Vec<ObjectId> = Vec::new();
    for row in rows {
        let col = match lanes.iter().position(|l| *l == row.id) {
            Some(col) => col,
            None => {
                lanes.push(row.id);
                lanes.len() - 1
            }
        };
        let mut next = lanes.clone();
        let mut opened = 0;
        match row.parents.first() {
            Some(first) => next[col] = *first,
            None => {
                next.remove(col);
            }
        }
        for parent in row.parents.iter().skip(1) {
            if !next.contains(parent) {
                next.insert(col + 1 + opened, *parent);
                opened += 1;
            }
        }
        let width = lanes.len().max(next.len());
        let mut line = lane_line(lanes.len(), |i| if i == col { '*' } else { '|' });
        pad(&mut line, width);
        out.push(format!("{line} {}", row.text).trim_end().to_owned());
        if opened > 0 {
            // `|\`: the lanes up to this one go on, each new one (and each one pushed right)
            // leaves diagonally.
            let mut chars = vec![' '; 2 * next.len() - 1];
            for i in 0..=col {
                chars[2 * i] = '|';
            }
            for j in col + 1..next.len() {
                chars[2 * j - 1] = '\\';
            }
            out.push(chars.into_iter().collect::<String>().trim_end().to_owned());
        } else if row.parents.is_empty() && col < next.len() {
            // A root ends its lane: the lanes to its right move left.
            out.push(collapse_line(next.len(), col));
        }
        // A lane now waiting for a checkpoint another lane already waits for joins it.
        while let Some(dup) = duplicate(&next) {
            next.remove(dup);
            out.push(collapse_line(next.len(), dup));
        }
        lanes = next;
    }
    out
}

/// The rightmost lane that waits for the same checkpoint as a lane to its left.
fn duplicate(lanes: &[ObjectId]) -> Option<usize> {
    (1..lanes.len())
        .rev()
        .find(|&i| lanes[..i].contains(&lanes[i]))
}

/// `|/`-style line: lanes left of `from` go on, the lane at `from` and those right of it move
/// one left (`remaining` lanes after the move).
fn collapse_line(remaining: usize, from: usize) -> String {
    let mut chars = vec![' '; 2 * remaining + 1];
    for i in 0..from.min(remaining) {
        chars[2 * i] = '|';
    }
    for k in from..=remaining {
        if k >= 1 {
            chars[2 * k - 1] = '/';
        }
    }
    chars.into_iter().collect::<String>().trim_end().to_owned()
}

fn lane_line(count: usize, symbol: impl Fn(usize) -> char) -> String {
    (0..count)
        .map(|i| symbol(i).to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn pad(line: &mut String, lanes: usize) {
    while line.len() < 2 * lanes - 1 {
        line.push(' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::of(&[n])
    }

    fn row(n: u8, parents: &[u8]) -> Row {
        Row {
            id: id(n),
            parents: parents.iter().map(|p| id(*p)).collect(),
            text: format!("c{n}"),
        }
    }

    #[test]
    fn a_merge_opens_a_lane_and_the_fork_point_closes_it() {
        // 5 = merge(3, 4); 3 -> 2 -> 1; 4 -> 1.
        let rows = [
            row(5, &[3, 4]),
            row(3, &[2]),
            row(2, &[1]),
            row(4, &[1]),
            row(1, &[]),
        ];
        assert_eq!(
            draw(&rows),
            ["*   c5", "|\\", "* | c3", "* | c2", "| * c4", "|/", "* c1"]
        );
    }

    #[test]
    fn a_line_is_one_lane() {
        let rows = [row(3, &[2]), row(2, &[1]), row(1, &[])];
        assert_eq!(draw(&rows), ["* c3", "* c2", "* c1"]);
    }
}
