// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test, console} from "../utils/Test.sol";
import {Handler, IToken} from "./Handler.sol";
import {MultiTokenPushPull} from "../../src/MultiTokenPushPull.sol";
import {ProductBank} from "../../src/ProductBank.sol";

/// @dev System invariants under random deposits, donations, allocations, deactivations,
///      signed pushes, claims and withdrawals.
contract InvariantTest is Test {
    Handler internal handler;
    MultiTokenPushPull internal pp;

    function setUp() public {
        handler = new Handler();
        pp = handler.pushPull();
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: handler.actions()}));
    }

    /// balanceOf(MultiTokenPushPull) >= totalPending = Σ pending = Σ pushed - Σ claimed.
    function invariant_pushPullSolvent() public view {
        for (uint256 t; t < handler.TOKENS(); ++t) {
            address tok = handler.tokens(t);
            uint256 totalPending = pp.getTotalPending(tok);
            assertGe(IToken(tok).balanceOf(address(pp)), totalPending, "balance >= totalPending");
            uint256 sum;
            for (uint256 u; u < handler.USERS(); ++u) {
                sum += pp.getPendingAmount(tok, handler.users(u));
            }
            assertEq(totalPending, sum, "totalPending == sum of pending");
            assertEq(sum, handler.ghostTotalPushed(tok) - handler.ghostTotalClaimed(tok), "pending == pushed - claimed");
        }
    }

    /// A bank's allocated budgets never exceed its balance, and equal Σ remaining caps.
    function invariant_bankAllocationCovered() public view {
        for (uint256 b; b < handler.BANKS(); ++b) {
            ProductBank bank = handler.banks(b);
            for (uint256 t; t < handler.TOKENS(); ++t) {
                address tok = handler.tokens(t);
                uint256 allocated = bank.getAllocatedBalance(tok);
                assertLe(allocated, IToken(tok).balanceOf(address(bank)), "allocated <= balance");
                assertEq(allocated, handler.cappedRemaining(b, t), "allocated == sum of caps");
            }
        }
    }

    /// Users hold exactly what they claimed, and each user's ledger matches the ghost.
    function invariant_userLedger() public view {
        for (uint256 t; t < handler.TOKENS(); ++t) {
            address tok = handler.tokens(t);
            for (uint256 u; u < handler.USERS(); ++u) {
                address user = handler.users(u);
                assertEq(IToken(tok).balanceOf(user), handler.ghostClaimed(tok, user), "balance == claimed");
                (uint256 earned, uint256 claimed) = pp.getAccount(tok, user);
                assertEq(earned, handler.ghostPushed(tok, user), "earned == pushed");
                assertEq(claimed, handler.ghostClaimed(tok, user), "claimed == ghost");
            }
        }
    }

    function _logCalls() internal view {
        console.log(string.concat(
            "pushes ", vm.toString(handler.calls("push")), " claims ", vm.toString(handler.calls("claim") + handler.calls("claimMany")),
            " allocs ", vm.toString(handler.calls("allocate")), " deact ", vm.toString(handler.calls("deactivate")),
            " withdraws ", vm.toString(handler.calls("withdraw")), " pushed ", vm.toString(handler.ghostTotalPushed(handler.tokens(0)))
        ));
    }

    /// At the end of every run, everyone can claim everything pushed to them.
    function afterInvariant() external {
        _logCalls();
        for (uint256 u; u < handler.USERS(); ++u) {
            handler.claimAllFor(handler.users(u));
        }
        for (uint256 t; t < handler.TOKENS(); ++t) {
            address tok = handler.tokens(t);
            assertEq(pp.getTotalPending(tok), 0, "nothing left pending");
            for (uint256 u; u < handler.USERS(); ++u) {
                address user = handler.users(u);
                assertEq(IToken(tok).balanceOf(user), handler.ghostPushed(tok, user), "received all pushed");
            }
        }
    }
}
