//! The configurations a tuning run tries: the cartesian product of the kernel's declared
//! tunable spaces (minus the ones the user pinned), the kernel's defaults first. A product
//! larger than the run's budget is sampled without repeats by a seeded generator, so a run is
//! reproducible and the default is always measured (it is the reference the others are
//! checked against and the "× default" column's denominator).

use std::collections::HashSet;

use opc_ir::Tunable;

/// One point of the search space: a value per tunable, in declaration order.
pub type Config = Vec<(String, i64)>;

/// The configurations to try, at most `max` of them, the default first; `pinned` tunables keep
/// the value they have in `tunables` (the instance already carries it).
pub fn configs(tunables: &[Tunable], pinned: &[String], max: usize, seed: u64) -> (Vec<Config>, u128) {
    let axes: Vec<(&str, Vec<i64>)> = tunables
        .iter()
        .map(|t| {
            let values = if pinned.contains(&t.name) { vec![t.value] } else { t.space.clone() };
            (t.name.as_str(), values)
        })
        .collect();
    let size: u128 = axes.iter().map(|(_, v)| v.len() as u128).product();
    let default_index: Vec<usize> = tunables
        .iter()
        .zip(&axes)
        .map(|(t, (_, v))| v.iter().position(|&x| x == t.value).unwrap_or(0))
        .collect();
    let point = |idx: &[usize]| -> Config { axes.iter().zip(idx).map(|((n, v), &i)| (n.to_string(), v[i])).collect() };
    let max = max.max(1);
    let mut seen: HashSet<Vec<usize>> = HashSet::from([default_index.clone()]);
    let mut out = vec![point(&default_index)];
    if size <= max as u128 {
        for_each_index(&axes.iter().map(|(_, v)| v.len()).collect::<Vec<_>>(), &mut |idx| {
            if seen.insert(idx.to_vec()) {
                out.push(point(idx));
            }
        });
    } else {
        let mut rng = SplitMix(seed);
        while out.len() < max {
            let idx: Vec<usize> = axes.iter().map(|(_, v)| (rng.next() % v.len() as u64) as usize).collect();
            if seen.insert(idx.clone()) {
                out.push(point(&idx));
            }
        }
    }
    (out, size)
}

/// Call `f` on every index vector of a grid with these extents (odometer order).
fn for_each_index(extents: &[usize], f: &mut dyn FnMut(&[usize])) {
    if extents.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; extents.len()];
    loop {
        f(&idx);
        let mut d = extents.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < extents[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// SplitMix64: a small seeded generator (sampling configurations, random inputs).
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, space: &[i64], value: i64) -> Tunable {
        Tunable { name: name.into(), level: 1, space: space.to_vec(), value, loc: None }
    }

    #[test]
    fn small_spaces_are_enumerated_whole_with_the_default_first() {
        let ts = [t("BM", &[16, 32, 64], 32), t("BK", &[8, 16], 16)];
        let (cs, size) = configs(&ts, &[], 100, 0);
        assert_eq!(size, 6);
        assert_eq!(cs.len(), 6);
        assert_eq!(cs[0], vec![("BM".to_string(), 32), ("BK".to_string(), 16)]);
        let distinct: HashSet<_> = cs.iter().collect();
        assert_eq!(distinct.len(), 6);
    }

    #[test]
    fn pinned_tunables_keep_their_value() {
        let ts = [t("BM", &[16, 32, 64], 64), t("BK", &[8, 16], 8)];
        let (cs, size) = configs(&ts, &["BM".to_string()], 100, 0);
        assert_eq!(size, 2);
        assert!(cs.iter().all(|c| c[0] == ("BM".to_string(), 64)));
        assert_eq!(cs.len(), 2);
    }

    #[test]
    fn large_spaces_are_sampled_without_repeats_and_reproducibly() {
        let ts = [t("A", &[1, 2, 3, 4, 5, 6, 7, 8], 3), t("B", &[1, 2, 3, 4, 5, 6, 7, 8], 5), t("C", &[1, 2, 3, 4], 1)];
        let (cs, size) = configs(&ts, &[], 10, 7);
        assert_eq!(size, 256);
        assert_eq!(cs.len(), 10);
        assert_eq!(cs[0], vec![("A".to_string(), 3), ("B".to_string(), 5), ("C".to_string(), 1)]);
        assert_eq!(cs.iter().collect::<HashSet<_>>().len(), 10);
        assert_eq!(configs(&ts, &[], 10, 7).0, cs);
        assert_ne!(configs(&ts, &[], 10, 8).0, cs);
    }

    #[test]
    fn a_kernel_without_tunables_has_one_configuration() {
        let (cs, size) = configs(&[], &[], 8, 0);
        assert_eq!(size, 1);
        assert_eq!(cs, vec![Vec::<(String, i64)>::new()]);
    }
}
