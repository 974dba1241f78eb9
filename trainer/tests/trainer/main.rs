//! The trainer's one test binary: the CLI end to end (cli), the SFT step against PyTorch
//! (sft), GRPO and rewards against hand-computed values (rl), and the stages as users run
//! them: resume, bad input, the curriculum, planning (stages); plan arithmetic (plan).
mod cli;
mod rl;
mod plan;
mod sft;
mod stages;
