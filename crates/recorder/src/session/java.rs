//! JVM allocation samples: the sampled object's class as the leaf frame of
//! its stack, the JVM's own frames cut, and the class names as material.

use profcap_format::{MemSpace, StackEnd};

use super::Session;
use crate::probes::{MemEvent, Probes};
use crate::Result;

impl Session {
    /// A JVM allocation sample (a new TLAB, or an object outside one): its
    /// stack is the Java (and native) callers, with the class's `Klass*`
    /// as the leaf, named by the capture's `[java-classes:PID]` blob.
    pub(super) fn on_java_alloc(&mut self, probes: &Probes, e: &MemEvent) -> Result<()> {
        let (head, klass) = (e.head, e.old_addr);
        if !self.java.note(head.pid, klass) {
            self.java_unnamed += 1;
        }
        let stack_id = match self.java_stacks.get(&(e.stack, klass)) {
            Some(&id) => id,
            None => {
                let mut frames = probes.mem_stack(e.stack);
                self.strip_jvm_frames(head.pid, &mut frames);
                frames.insert(0, klass);
                let id = self.unwound_stack_id(head.pid, &[], &frames, StackEnd::Unknown);
                if e.stack >= 0 {
                    self.java_stacks.insert((e.stack, klass), id);
                }
                id
            }
        };
        self.push_alloc(head, (0, e.size, e.weight.max(1), MemSpace::Host), stack_id)
    }

    /// Cuts the JVM's allocation machinery (libjvm.so frames from the leaf)
    /// so the stack starts at the code that allocated; all of it stays
    /// where nothing else is on the stack.
    fn strip_jvm_frames(&self, pid: u32, frames: &mut Vec<u64>) {
        let n = self.leading_frames_in(pid, frames, |path| path.ends_with("/libjvm.so"));
        if n < frames.len() {
            frames.drain(..n);
        }
    }

    /// The class names of the JVMs recorded, one blob per process.
    pub(super) fn write_java_classes(&mut self) -> Result<()> {
        for pid in self.java.pids() {
            let symbols: Vec<profcap_format::Symbol> = self
                .java
                .of(pid)
                .into_iter()
                .map(|(addr, name)| profcap_format::Symbol { addr, size: 1, name: name.to_owned() })
                .collect();
            log::info!("pid {pid}: {} Java classes named", symbols.len());
            self.push_named_addresses(profcap_format::java_classes_path(pid), symbols)?;
        }
        Ok(())
    }
}
